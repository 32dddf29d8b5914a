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
from fastervlm.tiny import synthetic_images, synthetic_video
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT, tiny_qwen2_5_vl, tiny_qwen2_vl, tiny_qwen2_vl_processor

FAMILIES = {"qwen2-vl": tiny_qwen2_vl, "qwen2.5-vl": tiny_qwen2_5_vl}
PROMPTS = [IMAGE_PROMPT + "What is it?", "Hi " + IMAGE_PROMPT + "Describe this one."]
STEPS = 4
VIDEO_PROMPT = "<|vision_start|><|video_pad|><|vision_end|>"


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


PIXELS = {"image": "pixel_values", "video": "pixel_values_videos"}


def encoded(model, inputs, modality: str):
    """The stock encoder output of the batch's images or videos."""
    encoder = getattr(model.model, f"get_{modality}_features")
    return encoder(inputs[PIXELS[modality]], inputs[f"{modality}_grid_thw"])


def eager_received(model, inputs, modality: str = "image") -> list[torch.Tensor]:
    """The proxy from the eager kernel's own maps at the last vision block, per image (or video: its frame groups
    one after the other), in merged raster order.

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
        encoded(model, inputs, modality)
    for handle in handles:
        handle.remove()
    merged = torch.cat(maps).view(-1, 4).mean(dim=1)
    grid = inputs[f"{modality}_grid_thw"]
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


def shortened(
    model, inputs, kept: list[torch.Tensor], modality: str = "image", item_rows: list[torch.Tensor] | None = None
) -> dict:
    """The stock model's inputs for the pruned sequence, built by hand: dropped image tokens removed, the stock
    encoder output cut to the kept rows, each kept token's original (t, h, w) ids from the stock get_rope_index,
    contiguous text-row ids. kept: per sample, indices into its image tokens; item_rows: per image, its kept rows
    (the same as kept when every sample holds one image)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    grid = f"{modality}_grid_thw"
    positions, _ = model.model.get_rope_index(
        ids, inputs["mm_token_type_ids"], **{grid: inputs[grid]}, attention_mask=mask
    )
    output = encoded(model, inputs, modality)
    image = ids == getattr(model.config, f"{modality}_token_id")
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
    item_rows = kept if item_rows is None else item_rows
    output.pooler_output = [f[k] for f, k in zip(output.pooler_output, item_rows, strict=True)]
    if getattr(output, "deepstack_features", None) is not None:  # Qwen3-VL: the same rows of every deepstack layer
        output.deepstack_features = [
            [f[k] for f, k in zip(x, item_rows, strict=True)] for x in output.deepstack_features
        ]
    out["mm_encoder_outputs"] = {modality: output}
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


def test_beam_search_and_two_images_in_a_sample_match_the_shortened_sequence(processor):
    """Sample 0 holds two images, sample 1 one; beam search expands the kept features and positions per beam."""
    prompts = [IMAGE_PROMPT + "A" + IMAGE_PROMPT + "Compare.", "Hi " + IMAGE_PROMPT + "Describe this one."]
    inputs = processor(images=synthetic_images(3, seed=1), text=prompts, padding=True, return_tensors="pt")
    stock, model = tiny_qwen2_5_vl(), tiny_qwen2_5_vl()
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        model(**inputs)  # the kept sets: beam search reports the beam-expanded rows
        report = fastervlm.last_report(model)
        pruned = generate(model, inputs, num_beams=2)
        sizes = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
        items = [report.kept_indices[0][0], report.kept_indices[0][1], report.kept_indices[1][0]]
        per_sample = [torch.cat([items[0], items[1] + sizes[0]]), items[2]]
        reference = generate(stock, shortened(stock, inputs, per_sample, item_rows=items), num_beams=2)
    assert [len(v) for views in report.kept_indices for v in views] == [round(0.5 * n) for n in sizes]
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])


def test_video_processor_patchifies_as_the_stock_image_processor(processor):
    """A still image is a video of one frame pair: the tiny video processor's patches equal the stock image
    processor's (which repeats the frame), so its (t, h, w) patch order is the stock one."""
    image = synthetic_images(1)[0]
    still = processor.image_processor(images=[image], return_tensors="pt")
    video = processor.video_processor(videos=[[image, image]], return_tensors="pt")
    assert torch.equal(video["video_grid_thw"], still["image_grid_thw"])
    assert torch.allclose(video["pixel_values_videos"], still["pixel_values"], atol=1e-5)


def test_videos_keep_the_top_k_of_each_frame_group_and_generate_like_the_stock_model(processor):
    """Two 4-frame videos (2 frame groups each) of different sizes, left padded: each frame group keeps the top
    half of its own received attention; generate equals the stock model on the shortened sequence."""
    videos = [synthetic_video(frames=4), synthetic_video(frames=4, seed=1, size=(200, 300))]
    prompts = [VIDEO_PROMPT + "What happens?", "Hi " + VIDEO_PROMPT + "Why?"]
    inputs = processor(videos=videos, text=prompts, padding=True, return_tensors="pt")
    eager, stock, model = tiny_qwen2_5_vl(attn_implementation="eager"), tiny_qwen2_5_vl(), tiny_qwen2_5_vl()
    expected = []
    frame_groups = inputs["video_grid_thw"][:, 0].tolist()
    for scores, t in zip(eager_received(eager, inputs, "video"), frame_groups, strict=True):
        groups = scores.view(t, -1)
        expected.append(list(groups.topk(round(0.5 * groups.shape[1]), dim=-1).indices.sort(dim=-1).values))
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, inputs)
        views = fastervlm.last_report(model).kept_indices
        rows = [
            torch.cat([v + i * (h // 2) * (w // 2) for i, v in enumerate(vs)])
            for vs, (_, h, w) in zip(views, inputs["video_grid_thw"].tolist(), strict=True)
        ]
        reference = generate(stock, shortened(stock, inputs, rows, "video"))
    assert [[v.tolist() for v in vs] for vs in views] == [[v.tolist() for v in vs] for vs in expected]
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for got, want in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


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


def test_llava_keeps_the_cls_score(tiny):
    fastervlm.prune(tiny, "fastervlm", ratio=0.5)
    assert config_of(tiny).score == "cls"
    fastervlm.unprune(tiny)
    with pytest.raises(ValueError, match="score='received' is implemented for vision towers without a \\[CLS\\]"):
        fastervlm.prune(tiny, "fastervlm", ratio=0.5, score="received")
