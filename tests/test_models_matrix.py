"""Every method on every supported model family: it prunes (the report matches the KV cache) or says why not."""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.methods import METHODS
from fastervlm.models.llava_next import paper_processor
from fastervlm.tiny import (
    synthetic_images,
    synthetic_video,
    tiny_llava_next,
    tiny_llava_next_processor,
    tiny_video_llava,
    tiny_video_llava_processor,
)
from fastervlm.tiny.clip_text import tiny_method_options
from fastervlm.tiny.llava_onevision import tiny_llava_onevision, tiny_llava_onevision_processor
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT, tiny_qwen2_5_vl, tiny_qwen2_vl_processor

IMAGE = "USER: <image>\nWhat is in the picture? ASSISTANT:"
VIDEO = "USER: <video>\nWhat happens? ASSISTANT:"
VIDEO_PROMPT = "<|vision_start|><|video_pad|><|vision_end|>"
DEPTH = {"sparsevlm": 17}  # its stages prune after layers 2, 6 and 15; the others need 4 at most
# PyramidDrop's default stages (8, 16, 24) keep >= 25 %; FitPrune's fitted schedules are for 32 layers.
BUDGET = {"pyramiddrop": {"ratio": 0.5, "layers": (1, 2, 3)}, "fitprune": {"schedule": (300, 100, 100, 0)}}


def next_inputs(mode: str) -> dict:
    processor = tiny_llava_next_processor()
    processor = paper_processor(processor) if mode == "paper" else processor
    return dict(processor(images=synthetic_images(2), text=[IMAGE, IMAGE], padding=True, return_tensors="pt"))


def video_inputs() -> dict:
    processor = tiny_video_llava_processor()
    return dict(processor(text=[IMAGE, VIDEO], images=synthetic_images(1), videos=[synthetic_video()], padding=True))


def qwen_inputs() -> dict:
    """An image sample and a 4-frame video sample (2 frame groups)."""
    prompts = [IMAGE_PROMPT + "What is in the picture?", VIDEO_PROMPT + "What happens?"]
    processor = tiny_qwen2_vl_processor()
    return dict(
        processor(
            images=synthetic_images(1),
            videos=[synthetic_video(frames=4)],
            text=prompts,
            padding=True,
            return_tensors="pt",
        )
    )


def onevision_inputs() -> dict:
    """An anyres image sample and a 4-frame video sample (frames pooled 2 x 2)."""
    processor = tiny_llava_onevision_processor()
    return dict(
        processor(
            text=[IMAGE, VIDEO],
            images=synthetic_images(1),
            videos=[synthetic_video(frames=4)],
            padding=True,
            return_tensors="pt",
        )
    )


FAMILIES = {
    "llava-next-stock": (tiny_llava_next, lambda: next_inputs("stock"), {}),
    "llava-next-paper": (tiny_llava_next, lambda: next_inputs("paper"), {"mode": "paper"}),
    "video-llava": (tiny_video_llava, video_inputs, {}),
    "qwen2.5-vl": (tiny_qwen2_5_vl, qwen_inputs, {}),
    "llava-onevision": (tiny_llava_onevision, onevision_inputs, {}),
}
# Methods a family refuses at prune() for a reason of its own (merging methods are refused everywhere alike, below).
NEEDS_CLS = r"score='cls' needs a vision \[CLS\] token"
REFUSED = {
    "qwen2.5-vl": {
        "cdpruner": "does not provide",
        "divprune": "does not provide",
        "vispruner": "does not provide",
    },
    "llava-onevision": {"cdpruner": "CLIP text tower matching the vision tower", "vispruner": NEEDS_CLS},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_prunes_or_refuses_clearly(family, method):
    build, inputs_of, options = FAMILIES[family]
    options = {**options, **tiny_method_options(method)}
    model = build(text_layers=DEPTH.get(method, 4))
    if method in REFUSED.get(family, {}):
        with pytest.raises(ValueError, match=REFUSED[family][method]):
            fastervlm.prune(model, method=method, ratio=0.9, **options)
        return
    if METHODS[method].merges and METHODS[method].stage == "vision":
        with pytest.raises(ValueError, match=f"method '{method}' makes new tokens, which .* cannot place"):
            fastervlm.prune(model, method=method, ratio=0.9, **options)
        return
    fastervlm.prune(model, method=method, **BUDGET.get(method, {"ratio": 0.9}), **options)
    inputs = inputs_of()
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    report = fastervlm.last_report(model)
    assert report.applied and report.visual_tokens_out < report.visual_tokens_in
    real = inputs["attention_mask"].sum(dim=1)
    pads = (inputs["attention_mask"] == 0).sum(dim=1)
    deepest = [layers[-1] for layers in report.seq_len_per_layer]
    assert sum(deepest) == int(real.sum()) - report.visual_tokens_in + report.visual_tokens_out
    assert out.past_key_values.layers[-1].keys.shape[-2] == max(d + int(p) for d, p in zip(deepest, pads, strict=True))
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 3)
