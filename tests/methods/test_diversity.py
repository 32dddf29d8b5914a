"""VisPruner and DivPrune against their reference code's steps, rebuilt here from the stock model's own tensors.

VisPruner: Theia-4869/VisPruner `LlavaMetaForCausalLM.encode_images`; DivPrune: vbdi/divprune `DivPrune` in
LLaVA/llava/model/llava_arch.py. Each reference is written step by step as that code does it, batched where it
batches; nothing from fastervlm's methods or runtime is used.
"""

from __future__ import annotations

import pytest
import torch

import fastervlm
from tests.methods.test_baselines_pre_llm import assert_generate_matches, project
from tests.reference import feature_layer_states


def tower_features(stock, pixel_values) -> torch.Tensor:
    """The patches at the feature layer from the stock (sdpa) tower: the model's own projector input.

    Not from the eager run that gives the attention map: the tiny tower's flat image regions make near-duplicate
    patches whose similarities differ by about what eager and sdpa differ by, and the matching must see the same.
    """
    with torch.no_grad():
        out = stock.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[stock.config.vision_feature_layer][:, 1:]


def vispruner_reference(stock, pixel_values, visual_token_num: int, important_ratio: float) -> torch.Tensor:
    """Selected patch indices (images, T), ascending, as the reference's index mask orders them."""
    _, _, attentions = feature_layer_states(stock, pixel_values)
    image_features, image_attentions = tower_features(stock, pixel_values), attentions[:, :, 0, 1:]  # 'patch'
    B, N, _ = image_features.shape
    important_token_num = int(visual_token_num * important_ratio)
    diverse_token_num = visual_token_num - important_token_num
    token_indices = image_attentions.mean(dim=1).argsort(dim=-1, descending=True)
    important_indices = token_indices[:, :important_token_num]
    residual_indices = token_indices[:, important_token_num:]
    image_normalized = image_features / image_features.norm(dim=-1, keepdim=True)
    while diverse_token_num > 0:
        R = residual_indices.shape[1]
        r = min(8, R - diverse_token_num)
        if r <= 0:
            break
        residual_tokens = image_normalized[torch.arange(B).unsqueeze(-1).expand(-1, R), residual_indices]
        a, b = residual_tokens[..., ::2, :], residual_tokens[..., 1::2, :]
        scores = (a @ b.transpose(-1, -2)).max(dim=-1).values
        distinct_indices = scores.argsort(dim=-1, descending=True)[:, r:]
        residual_indices = torch.cat(
            [
                residual_indices[..., ::2][torch.arange(B).unsqueeze(-1).expand(-1, R // 2 - r), distinct_indices],
                residual_indices[..., 1::2],
            ],
            dim=-1,
        )
    selected = torch.cat([important_indices, residual_indices], dim=-1) if diverse_token_num > 0 else important_indices
    index_masks = torch.zeros(B, N, dtype=torch.bool).scatter_(1, selected, True)
    return torch.stack([m.nonzero().squeeze(1) for m in index_masks])


@pytest.mark.parametrize(("tokens", "important_ratio"), [(64, 0.5), (128, 0.25)])
def test_vispruner_matches_reference(make_llava, batch, tokens, important_ratio):
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="vispruner", tokens=tokens, important_ratio=important_ratio)
    kept = vispruner_reference(stock, batch["pixel_values"], tokens, important_ratio)
    patches = tower_features(stock, batch["pixel_values"])
    assert_generate_matches(model, stock, batch, [project(stock, p[k]) for p, k in zip(patches, kept, strict=True)])
    assert [v[0].tolist() for v in fastervlm.last_report(model).kept_indices] == kept.tolist()


def divprune_reference(stock, pixel_values, subset_ratio: float) -> list[torch.Tensor]:
    """Per image: the reference's picks over its projected tokens (the LLM's input embeddings), sorted."""
    with torch.no_grad():
        projected = stock.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    kept = []
    for visual_tokens in projected:
        threshold_terms = round(subset_ratio * visual_tokens.shape[0])
        norm_matrix = visual_tokens / visual_tokens.norm(dim=1, keepdim=True)
        cosine_matrix = 1.0 - torch.mm(norm_matrix, norm_matrix.t())
        s = torch.empty(threshold_terms, dtype=torch.long)
        for i in range(threshold_terms):
            if i == 0:
                scores = torch.topk(cosine_matrix, 2, dim=0, largest=False).values[1, :]
            else:
                scores = torch.min(torch.index_select(cosine_matrix, 0, s[:i]), dim=0).values
            s[i] = torch.argmax(scores)
        kept.append(s.sort().values)
    return kept


@pytest.mark.parametrize("options", [{}, {"tokens": 64}])
def test_divprune_matches_reference(make_llava, batch, options):
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="divprune", **options)
    subset_ratio = options["tokens"] / 576 if options else 0.098  # run_Divprune.sh's SUBSET_RATIO by default
    kept = divprune_reference(stock, batch["pixel_values"], subset_ratio)
    assert len(kept[0]) == options.get("tokens", 56)
    with torch.no_grad():
        projected = stock.model.get_image_features(pixel_values=batch["pixel_values"], return_dict=True).pooler_output
    assert_generate_matches(model, stock, batch, [p[k] for p, k in zip(projected, kept, strict=True)])
    assert [v[0].tolist() for v in fastervlm.last_report(model).kept_indices] == [k.tolist() for k in kept]


def test_vispruner_odd_residual_and_options():
    """At ratio 0.9 (k = 58, 29 important) 547 patches remain, an odd count the reference cannot match; here it
    still keeps exactly k distinct patches; a bad important_ratio names itself."""
    from fastervlm.methods.signals import ViewSignals
    from fastervlm.methods.vispruner import VisPrunerConfig, select

    torch.manual_seed(0)
    views = ViewSignals(num_patches=576, num_views=2, cls_attention=torch.rand(2, 576), features=torch.randn(2, 576, 8))
    kept = select(VisPrunerConfig(ratio=0.9), views)
    assert kept.shape == (2, 58) and all(len(k.unique()) == 58 for k in kept)
    for view, k in zip(views.cls_attention, kept, strict=True):
        assert set(view.topk(29).indices.tolist()) <= set(k.tolist())
    with pytest.raises(ValueError, match="important_ratio"):
        VisPrunerConfig(important_ratio=1.5)


def test_patches_the_layout_cuts_come_last():
    """LLaVA-NeXT's unpadding cuts some crop patches: each method picks among the others first, and only a view
    with fewer usable patches than k takes cut ones (which never reach the LLM)."""
    from fastervlm.methods import divprune, vispruner
    from fastervlm.methods.signals import ViewSignals

    torch.manual_seed(0)
    usable = torch.ones(2, 576, dtype=torch.bool)
    usable[0, 100:] = False  # 100 usable: k = 58 fits
    usable[1, 40:] = False  # 40 usable: all of them, then 18 cut ones
    views = ViewSignals(
        num_patches=576,
        num_views=2,
        cls_attention=torch.rand(2, 576),
        features=torch.randn(2, 576, 8),
        projected=torch.randn(2, 576, 8),
        candidates=usable,
    )
    for method in (vispruner, divprune):
        config = method.VisPrunerConfig(ratio=0.9) if method is vispruner else method.DivPruneConfig(ratio=0.9)
        kept = method.select(config, views)
        assert kept.shape == (2, 58) and all(len(k.unique()) == 58 for k in kept)
        assert usable[0, kept[0]].all()
        assert int(usable[1, kept[1]].sum()) == 40
