"""CDPruner against its reference code's steps (Theia-4869/CDPruner `encode_images` and the CLIP text tower's
`forward`), rebuilt here from the stock model's tensors and a CLIP loaded with transformers' own classes.

The reference is handed the question itself, as its eval scripts do; the pruned model reads it from input_ids.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

import fastervlm
from fastervlm.runtime.instruction import view_owners
from tests.methods.test_baselines_pre_llm import assert_generate_matches
from tests.methods.test_diversity import tower_features

QUESTIONS = ["What is in the picture?", "Describe it."]  # the questions inside conftest.PROMPTS


def cdpruner_reference(stock, pixel_values, questions, visual_token_num: int, clip_dir: str) -> list[torch.Tensor]:
    """Per image (the reference evaluates one image per batch): its kept patch indices, ascending."""
    text_tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    text_tower = CLIPTextModelWithProjection.from_pretrained(clip_dir)
    vision_with_projection = CLIPVisionModelWithProjection.from_pretrained(clip_dir)
    max_position_embeddings = text_tower.config.max_position_embeddings
    patches = tower_features(stock, pixel_values)
    with torch.no_grad():
        projected = stock.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    kept = []
    for image_outputs, image_features, texts in zip(patches, projected, questions, strict=True):
        image_outputs, image_features = image_outputs.unsqueeze(0), image_features.unsqueeze(0)
        with torch.no_grad():
            text_inputs = text_tokenizer(text=texts, return_tensors="pt")
            text_segment = (text_inputs.input_ids.shape[1] - 1) // max_position_embeddings + 1
            text_padding = max_position_embeddings * text_segment - text_inputs.input_ids.shape[1]
            text_inputs = {
                k: torch.cat([v, v.new_zeros((v.shape[0], text_padding))], dim=1).reshape(-1, max_position_embeddings)
                for k, v in text_inputs.items()
                if k in ("input_ids", "attention_mask")
            }
            text_embeds = text_tower(**text_inputs).text_embeds
            image_embeds = vision_with_projection.vision_model.post_layernorm(image_outputs)
            image_embeds = vision_with_projection.visual_projection(image_embeds.float())
        B, N, _ = image_features.shape
        image_normalized = (image_features / image_features.norm(dim=-1, keepdim=True)).float()
        similarity = torch.matmul(image_normalized, image_normalized.transpose(1, 2))
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        relevance = (-torch.matmul(image_embeds, text_embeds.t())).mean(dim=-1)
        relevance = (relevance - relevance.min() + 1e-6) / (relevance.max() - relevance.min())
        kernel = relevance.unsqueeze(2) * similarity * relevance.unsqueeze(1)
        cis = torch.zeros((visual_token_num, B, N))
        di2s = torch.diagonal(kernel, dim1=1, dim2=2).clone()
        select_idx = torch.empty((visual_token_num, B), dtype=torch.long)
        for i in range(visual_token_num):
            j = torch.argmax(di2s, dim=-1)
            select_idx[i] = j
            eis = (
                kernel[torch.arange(B), j] - torch.einsum("tb,tbn->bn", cis[:i, torch.arange(B), j], cis[:i])
            ) / torch.sqrt(di2s[torch.arange(B), j]).unsqueeze(-1)
            cis[i, :, :] = eis
            di2s -= torch.square(eis)
            di2s[torch.arange(B), j] = -float("inf")
        kept.append(torch.sort(select_idx.t()).values[0])
    return kept


@pytest.mark.parametrize("tokens", [16, 32])
def test_cdpruner_matches_reference(make_llava, batch, cdpruner_options, tokens):
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="cdpruner", tokens=tokens, **cdpruner_options)
    kept = cdpruner_reference(stock, batch["pixel_values"], QUESTIONS, tokens, cdpruner_options["text_tower"])
    with torch.no_grad():
        projected = stock.model.get_image_features(pixel_values=batch["pixel_values"], return_dict=True).pooler_output
    assert_generate_matches(model, stock, batch, [p[k] for p, k in zip(projected, kept, strict=True)])
    assert [v[0].tolist() for v in fastervlm.last_report(model).kept_indices] == [k.tolist() for k in kept]


def test_the_instruction_decides(make_llava, processor, cdpruner_options):
    """Same image, two questions: the kept sets differ (a method blind to the text would keep one set)."""
    from fastervlm.tiny import synthetic_images

    image = synthetic_images(1)[0]
    prompts = ["USER: <image>\nWhere is the red square? ASSISTANT:", "USER: <image>\nCount the people. ASSISTANT:"]
    inputs = processor(images=[image, image], text=prompts, padding=True, return_tensors="pt")
    model = fastervlm.prune(make_llava(), method="cdpruner", tokens=16, **cdpruner_options)
    with torch.no_grad():
        model(**inputs)
    first, second = (views[0].tolist() for views in fastervlm.last_report(model).kept_indices)
    assert first != second


def test_options_name_themselves(make_llava, cdpruner_options, tmp_path):
    missing = str(tmp_path / "missing")  # a local path: a hub id would reach for the network
    with pytest.raises(ValueError, match=r"tokenizer .*missing. could not be loaded"):
        fastervlm.prune(make_llava(), method="cdpruner", text_tower=cdpruner_options["text_tower"], tokenizer=missing)
    with pytest.raises(ValueError, match="remove must be a list of strings"):
        fastervlm.prune(make_llava(), method="cdpruner", remove="ASSISTANT:")


def test_views_find_their_samples():
    assert view_owners([(1, 576), (1, 576), (1, 576)], [1152, 576]) == [0, 0, 1]
    assert view_owners([(5, 2000), (3, 1500)], [0, 2000, 1500]) == [1] * 5 + [2] * 3
    with pytest.raises(ValueError, match="do not fit"):
        view_owners([(1, 576)], [100])


def test_patches_the_layout_cuts_come_last(cdpruner_options):
    """As for every method before the LLM: usable patches first; a view with fewer than k takes cut ones last."""
    from fastervlm.methods.cdpruner import CDPrunerConfig, select
    from fastervlm.methods.signals import ViewSignals

    torch.manual_seed(0)
    usable = torch.ones(2, 576, dtype=torch.bool)
    usable[0, 100:] = False
    usable[1, 10:] = False
    views = ViewSignals(
        num_patches=576,
        num_views=2,
        features=torch.randn(2, 576, 32),
        projected=torch.randn(2, 576, 64),
        candidates=usable,
        instructions=["What is it?"] * 2,
    )
    kept = select(CDPrunerConfig(ratio=None, tokens=16, **cdpruner_options), views)
    assert kept.shape == (2, 16) and all(len(k.unique()) == 16 for k in kept)
    assert usable[0, kept[0]].all() and int(usable[1, kept[1]].sum()) == 10
