"""The viz figure: every panel titled, the heatmap with a labelled colour bar, PNG and PDF byte-for-byte stable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastervlm.viz import kept_figure, save_figure
from fastervlm.viz.figure import HEAT_LABEL, HEAT_TITLE, IMAGE_TITLE


def rows() -> dict[str, list[tuple[str, Image.Image]]]:
    dark, light = Image.new("RGB", (336, 336), (20, 20, 20)), Image.new("RGB", (336, 336), (200, 200, 200))
    return {
        "fastervlm": [("fastervlm, ratio 0.75", light), ("fastervlm, ratio 0.9", dark)],
        "fastv": [("fastv, ratio 0.75", light), ("fastv, ratio 0.9", dark)],
    }


def figure():
    heat = np.linspace(0, 1, 576, dtype=np.float32).reshape(24, 24)
    return kept_figure(Image.new("RGB", (336, 336), (90, 120, 150)), heat, rows())


def test_every_panel_is_titled_and_the_heatmap_has_a_labelled_colour_bar():
    drawn = figure()
    titles = [axes.get_title() for axes in drawn.axes]
    assert titles[:2] == [IMAGE_TITLE, HEAT_TITLE]
    assert [t for t in titles if "ratio" in t] == [title for panels in rows().values() for title, _ in panels]
    (bar,) = drawn.axes[1].child_axes
    assert bar.get_ylabel() == HEAT_LABEL


def test_png_and_pdf_written_and_deterministic(tmp_path):
    first = save_figure(figure(), tmp_path / "a" / "viz.png")
    second = save_figure(figure(), tmp_path / "b" / "viz.png")
    assert [p.name for p in first] == ["viz.png", "viz.pdf"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert first[1].read_bytes().startswith(b"%PDF")
    with Image.open(first[0]) as png:
        assert png.format == "PNG" and png.size[0] > 2 * 300 and png.size[1] > 3 * 300  # 3 rows of panels


def test_out_must_be_a_png(tmp_path):
    with pytest.raises(ValueError, match=r"--out must name a \.png"):
        save_figure(figure(), tmp_path / "viz.jpg")
    with pytest.raises(ValueError, match="heat must be a 2-D"):
        kept_figure(Image.new("RGB", (336, 336)), np.zeros(576), rows())
