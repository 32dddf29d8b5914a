"""Reports of real pruned prefills drawn on the image: the [CLS] heatmap is what fastervlm ranked, the overlay's
dimmed area is exactly the dropped fraction, for a vision-side and an in-LLM method alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastervlm import demo
from fastervlm.methods import resolve_config
from fastervlm.report import Report
from fastervlm.viz import cls_attention, kept_reports, model_view, overlay

PATCH = 14


@pytest.fixture(scope="module")
def scene() -> tuple[Image.Image, list[Report], torch.Tensor]:
    """A 336 px noise image (its view is itself, no pixel 0), its [CLS] row and fastervlm / fastv at ratio 0.9."""
    image = Image.fromarray(np.random.default_rng(1).integers(64, 256, (336, 336, 3), dtype=np.uint8), "RGB")
    model, processor = demo.load_llava(None)
    inputs = demo.batch(model, processor, [image], "What is shown?")
    configs = [resolve_config(name, {"ratio": 0.9}) for name in ("fastervlm", "fastv")]
    return image, kept_reports(model, inputs, configs), cls_attention(model, inputs)


def test_heatmap_is_the_row_fastervlm_ranks(scene):
    _, (fastervlm_report, _), heat = scene
    assert heat.shape == (1, 576)
    assert torch.equal(heat[0].topk(58).indices.sort().values, fastervlm_report.kept_indices[0][0])


@pytest.mark.parametrize("which", [0, 1], ids=["fastervlm", "fastv"])
def test_overlay_of_a_report_dims_exactly_the_dropped_patches(scene, which):
    image, reports, _ = scene
    report = reports[which]
    kept = report.kept_indices[0][0]
    assert len(kept) == 58
    changed = (np.asarray(overlay(image, report)) != np.asarray(model_view(image))).any(axis=-1)
    assert changed.mean() == pytest.approx((576 - 58) / 576)
    per_patch = changed.reshape(24, PATCH, 24, PATCH).all(axis=(1, 3)).reshape(-1)
    assert np.flatnonzero(~per_patch).tolist() == kept.tolist()


def test_overlay_names_what_the_report_holds(scene):
    image, reports, _ = scene
    with pytest.raises(ValueError, match=r"sample must be in \[0, 1\)"):
        overlay(image, reports[0], sample=1)
    with pytest.raises(ValueError, match=r"view must be in \[0, 1\)"):
        overlay(image, reports[0], view=2)
    with pytest.raises(ValueError, match="did not apply"):
        overlay(image, Report(method="fastv", note="no image in the batch"))
