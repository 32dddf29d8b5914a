"""In-LLM methods report like the others: per sample, per view, patch indices in that view's raster order (issue 15).

The reference for a view's patches is the pre-LLM path's report at ratio 0, which lists per view every patch the
model's own layout carries (LLaVA-NeXT unpadding cuts some crop patches; newline rows carry none).
"""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.tiny import synthetic_images, tiny_llava_next, tiny_llava_next_processor

IN_LLM = [("fastv", {}), ("sparsevlm", {"layers": (0, 1, 2)})]


def views_of(report) -> list[list[list[int]]]:
    return [[v.tolist() for v in views] for views in report.kept_indices]


def check_against_all_patches(report, every: list[list[list[int]]]) -> None:
    """Each view's kept patches: ascending, among the patches its layout carries; views as in the full report."""
    got = views_of(report)
    assert [len(views) for views in got] == [len(views) for views in every]
    for views, full in zip(got, every, strict=True):
        for kept, allowed in zip(views, full, strict=True):
            assert kept == sorted(set(kept)) and set(kept) <= set(allowed)
    assert 0 < sum(len(v) for views in got for v in views) <= report.visual_tokens_out


def reports(model_for, inputs, method, options) -> tuple:
    every = fastervlm.prune(model_for(), method="fastervlm", ratio=0.0)
    full = fastervlm.prune(model_for(), method=method, ratio=0.0, **options)
    pruned = fastervlm.prune(model_for(), method=method, ratio=0.75, **options)
    with torch.no_grad():
        for model in (every, full, pruned):
            model(**inputs)
    return tuple(fastervlm.last_report(m) for m in (every, full, pruned))


@pytest.mark.parametrize(("method", "options"), IN_LLM)
def test_two_adjacent_images_are_two_views(make_llava, processor, method, options):
    texts = ["USER: <image><image>\nCompare. ASSISTANT:", "USER: <image>\nWhat? ASSISTANT:"]
    inputs = processor(images=synthetic_images(3, seed=2), text=texts, padding=True, return_tensors="pt")
    every, full, pruned = reports(lambda: make_llava(text_layers=4), inputs, method, options)
    assert views_of(full) == views_of(every) == [[list(range(576))] * 2, [list(range(576))]]
    check_against_all_patches(pruned, views_of(every))


@pytest.mark.parametrize(("method", "options"), IN_LLM[:1])
def test_llava_next_base_and_crops_are_views(method, options):
    """A 3-view and a 5-view image: each view indexed in its own 24 x 24 raster, newline rows left out."""
    processor = tiny_llava_next_processor()
    images = synthetic_images(3)
    texts = ["USER: <image>\nWhat? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"]
    inputs = processor(images=[images[0], images[2]], text=texts, padding=True, return_tensors="pt")
    every, full, pruned = reports(lambda: tiny_llava_next(text_layers=4), inputs, method, options)
    assert [len(views) for views in views_of(every)] == [3, 5]
    assert views_of(full) == views_of(every)
    check_against_all_patches(pruned, views_of(every))
