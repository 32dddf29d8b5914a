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

IMAGE = "USER: <image>\nWhat is in the picture? ASSISTANT:"
VIDEO = "USER: <video>\nWhat happens? ASSISTANT:"
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


FAMILIES = {
    "llava-next-stock": (tiny_llava_next, lambda: next_inputs("stock"), {}),
    "llava-next-paper": (tiny_llava_next, lambda: next_inputs("paper"), {"mode": "paper"}),
    "video-llava": (tiny_video_llava, video_inputs, {}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_prunes_or_refuses_clearly(family, method):
    build, inputs_of, options = FAMILIES[family]
    options = {**options, **tiny_method_options(method)}
    model = build(text_layers=DEPTH.get(method, 4))
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
