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


def test_panel_titles_say_what_is_kept_merged_and_where():
    from fastervlm.viz.kept import bright_patches, panel_title

    assert panel_title("ratio 0.9", 58, 0, None) == "ratio 0.9: 58 kept"
    assert panel_title("ratio 0.9", 48, 10, None) == "ratio 0.9: 48 kept + 10 merged"
    assert panel_title("ratio 0.9", 0, 56, None) == "ratio 0.9: 56 merged, none as is"
    assert panel_title("ratio 0.9", 58, 0, 2) == "ratio 0.9: 58 kept\nwhat LLM layers 2+ see"
    # Several views (LLaVA-NeXT): merged tokens are the image's, never "none as is" for the view drawn.
    title = "ratio 0.9: 0 kept (+ 3 merged, whole image)\nwhat LLM layers 16+ see"
    assert panel_title("ratio 0.9", 0, 3, 16, views=3) == title
    assert bright_patches(torch.tensor([], dtype=torch.long), 56, 576).tolist() == list(range(576))
    assert bright_patches(torch.tensor([3, 7]), 10, 576).tolist() == [3, 7]
