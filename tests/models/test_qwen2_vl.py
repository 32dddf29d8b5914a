"""Qwen2-VL and Qwen2.5-VL: the received-attention proxy, original M-RoPE positions, and the runtime contract.

References are built here from the stock model: eager attention maps for the score, and the stock model fed a
hand-shortened sequence (kept image features, their original (t, h, w) position ids) for generate.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from transformers import BatchFeature
from transformers.vision_utils import get_vision_window_index

import fastervlm
from fastervlm.api import config_of
from fastervlm.tiny import synthetic_images
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT, tiny_qwen2_5_vl, tiny_qwen2_vl, tiny_qwen2_vl_processor

FAMILIES = {"qwen2-vl": tiny_qwen2_vl, "qwen2.5-vl": tiny_qwen2_5_vl}
PROMPTS = [IMAGE_PROMPT + "What is it?", "Hi " + IMAGE_PROMPT + "Describe this one."]
STEPS = 4


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen2_vl_processor()


@pytest.fixture(scope="module")
def batch(processor) -> BatchFeature:
    """Two images of different sizes (3 x 5 and 4 x 4 merged tokens), prompts of different lengths: left padding."""
    return processor(images=synthetic_images(2), text=PROMPTS, padding=True, return_tensors="pt")


def generate(model, inputs, **kwargs):
    return model.generate(
        **inputs, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True, **kwargs
    )


def eager_received(model, inputs) -> list[torch.Tensor]:
    """The proxy from the eager kernel's own maps at the last vision block, per image, in merged raster order.

    Each map is one call of the kernel: an image (full-attention blocks) or a window (windowed blocks); mean over
    heads and queries, then over the 2 x 2 patches of each merged token, then Qwen2.5-VL's window order undone.
    """
    module = importlib.import_module(type(model).__module__)
    kernel, maps, scored = module.eager_attention_forward, [], model.model.visual.blocks[-1].attn
    active = []

    def recording(*args, **kwargs):
        output, weights = kernel(*args, **kwargs)
        if active:
            maps.append(weights[0].mean(dim=(0, 1)))
        return output, weights

    handles = [
        scored.register_forward_pre_hook(lambda *a: active.append(True)),
        scored.register_forward_hook(lambda *a: active.clear()),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "eager_attention_forward", recording)
        model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    for handle in handles:
        handle.remove()
    merged = torch.cat(maps).view(-1, 4).mean(dim=1)
    grid = inputs["image_grid_thw"]
    vision = model.config.vision_config
    if getattr(vision, "window_size", None):
        order, _ = get_vision_window_index(grid, 2, vision.window_size, vision.patch_size)
        merged = torch.empty_like(merged).index_copy_(0, order, merged)
    return list(merged.split((grid.prod(-1) // 4).tolist()))


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_sets_are_top_k_of_the_eager_received_attention(family, batch):
    eager = FAMILIES[family](attn_implementation="eager")
    expected = [s.topk(round(0.5 * len(s))).indices.sort().values for s in eager_received(eager, batch)]
    model = FAMILIES[family]()  # sdpa: the score must not need the eager kernel
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        model(**batch)
    report = fastervlm.last_report(model)
    assert report.score == "received" and config_of(model).score == "received"
    assert [views[0].tolist() for views in report.kept_indices] == [k.tolist() for k in expected]


def shortened(model, inputs, kept: list[torch.Tensor]) -> dict:
    """The stock model's inputs for the pruned sequence, built by hand: dropped image tokens removed, the stock
    encoder output cut to the kept rows, each kept token's original (t, h, w) ids from the stock get_rope_index,
    contiguous text-row ids."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions, _ = model.model.get_rope_index(
        ids, inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=mask
    )
    encoded = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    image = ids == model.config.image_token_id
    rows = []
    for b in range(len(ids)):
        keep = mask[b].bool().clone()
        keep[image[b].nonzero().squeeze(1)] = False
        keep[image[b].nonzero().squeeze(1)[kept[b]]] = True
        rows.append(keep.nonzero().squeeze(1))
    width = max(len(r) for r in rows)
    names = ("input_ids", "attention_mask", "mm_token_type_ids")
    out = {k: torch.zeros(len(ids), width, dtype=torch.long) for k in names}
    out["input_ids"].fill_(model.config.text_config.pad_token_id)
    rope = torch.zeros(3, len(ids), width, dtype=torch.long)
    for b, r in enumerate(rows):
        out["input_ids"][b, width - len(r) :] = ids[b, r]
        out["attention_mask"][b, width - len(r) :] = 1
        out["mm_token_type_ids"][b, width - len(r) :] = inputs["mm_token_type_ids"][b, r]
        rope[:, b, width - len(r) :] = positions[:, b, r]
    text = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    out["position_ids"] = torch.cat([text.unsqueeze(0), rope])
    encoded.pooler_output = [f[k] for f, k in zip(encoded.pooler_output, kept, strict=True)]
    if getattr(encoded, "deepstack_features", None) is not None:  # Qwen3-VL: the same rows of every deepstack layer
        encoded.deepstack_features = [[f[k] for f, k in zip(x, kept, strict=True)] for x in encoded.deepstack_features]
    out["mm_encoder_outputs"] = {"image": encoded}
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_equals_the_stock_model_on_the_shortened_sequence(family, batch):
    stock, model = FAMILIES[family](), FAMILIES[family]()
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, batch)
        kept = [views[0] for views in fastervlm.last_report(model).kept_indices]
        reference = generate(stock, shortened(stock, batch, kept))
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for step, (got, want) in enumerate(zip(pruned.logits, reference.logits, strict=True)):
        assert torch.allclose(got, want, atol=1e-5), f"step {step}"
    # A manual prefill and cached step without position ids (the stock model, given its full mask, fails here in
    # transformers 5.23): the stored rope deltas put the step at its original position.
    with torch.no_grad():
        first = model(**batch, use_cache=True)
        token = pruned.sequences[:, batch["input_ids"].shape[1]].unsqueeze(1)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(token)], dim=1)
        second = model(input_ids=token, attention_mask=mask, past_key_values=first.past_key_values)
    assert torch.allclose(second.logits[:, -1], pruned.logits[1], atol=1e-5)


def test_rope_deltas_continue_from_the_original_positions(processor):
    """A decode step without position ids adds the stored rope deltas to the cache length (transformers 5.23's
    compute_3d_position_ids): pruned, the cache is shorter, so the deltas must grow by the tokens removed."""
    inputs = processor(images=synthetic_images(1), text=PROMPTS[:1], return_tensors="pt")
    stock, model = tiny_qwen2_5_vl(), tiny_qwen2_5_vl()
    fastervlm.prune(model, "fastervlm", ratio=0.75)
    with torch.no_grad():
        full, short = stock(**inputs, use_cache=True), model(**inputs, use_cache=True)
    assert short.past_key_values.get_seq_length() < full.past_key_values.get_seq_length()
    positions = [
        m.model.compute_3d_position_ids(
            input_ids=None,
            image_grid_thw=None,
            video_grid_thw=None,
            inputs_embeds=torch.zeros(1, 1, 8),
            attention_mask=None,
            past_key_values=out.past_key_values,
        )
        for m, out in ((stock, full), (model, short))
    ]
    assert torch.equal(positions[1], positions[0])


@pytest.mark.parametrize("method", ["fastervlm", "random"])
def test_ratio_zero_is_the_stock_model_and_unprune_restores_it(method, batch):
    model = tiny_qwen2_5_vl()
    with torch.no_grad():
        expected, logits = generate(model, batch), model(**batch).logits
        fastervlm.prune(model, method, ratio=0.0)
        got = generate(model, batch)
        assert torch.equal(got.sequences, expected.sequences)
        assert all(torch.equal(a, b) for a, b in zip(got.logits, expected.logits, strict=True))
        fastervlm.unprune(model)
        fastervlm.prune(model, method, ratio=0.5)
        model(**batch)
        fastervlm.unprune(model)
        assert torch.equal(model(**batch).logits, logits) and not hasattr(model, "_fastervlm")


@pytest.mark.parametrize(("method", "options"), [("fastervlm", {"ratio": 0.5}), ("random", {"tokens": 3})])
def test_batched_equals_one_by_one(method, options, processor, batch):
    model = tiny_qwen2_vl()
    fastervlm.prune(model, method, **options)
    with torch.no_grad():
        together = generate(model, batch)
        kept = fastervlm.last_report(model).kept_indices
        for b, (image, prompt) in enumerate(zip(synthetic_images(2), PROMPTS, strict=True)):
            alone = generate(model, processor(images=[image], text=[prompt], return_tensors="pt"))
            assert torch.equal(alone.sequences[0, -STEPS:], together.sequences[b, -STEPS:])
            assert torch.allclose(alone.logits[0][0], together.logits[0][b], atol=1e-4)
            assert [v.tolist() for v in fastervlm.last_report(model).kept_indices[0]] == [v.tolist() for v in kept[b]]


def test_refusals_name_the_choice():
    model = tiny_qwen2_vl()
    with pytest.raises(ValueError, match=r"score='cls' needs a vision \[CLS\] token.*score='received'"):
        fastervlm.prune(model, "fastervlm", ratio=0.5, score="cls")
    with pytest.raises(ValueError, match="makes new tokens"):
        fastervlm.prune(model, "pool", ratio=0.5)
    for method in ("vispruner", "divprune", "cdpruner"):
        with pytest.raises(ValueError, match=r"needs .*_features, which Qwen2VLForConditionalGeneration does not"):
            fastervlm.prune(model, method, ratio=0.5)
    with pytest.raises(ValueError, match="score must be one of"):
        fastervlm.prune(model, "fastervlm", score="mean")
    assert not hasattr(model, "_fastervlm")
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with pytest.raises(ValueError, match="videos are not pruned on Qwen-VL models yet"):
        model(
            input_ids=torch.tensor([[5]]),
            pixel_values_videos=torch.zeros(4, 1176),
            video_grid_thw=torch.tensor([[1, 2, 2]]),
        )


def test_llava_keeps_the_cls_score(tiny):
    fastervlm.prune(tiny, "fastervlm", ratio=0.5)
    assert config_of(tiny).score == "cls"
    fastervlm.unprune(tiny)
    with pytest.raises(ValueError, match="score='received' is implemented for vision towers without a \\[CLS\\]"):
        fastervlm.prune(tiny, "fastervlm", ratio=0.5, score="received")
