"""The `fastervlm viz` figure: the image, its [CLS] attention heatmap, and one kept-patch panel per method x budget.

Pure layout: callers draw the pictures (a LLaVA-1.5 view, a LLaVA-NeXT image with its crops, a strip of frames),
so one figure serves every family.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from fastervlm.viz.overlay import DPI, GAP_INCHES, PANEL_INCHES, TITLE_INCHES

COLORBAR_INCHES = 0.9  # right margin for the heatmap's colour bar and its label
HEAT_LABEL = "[CLS] attention (softmax share)"
HEAT_TITLE = "vision [CLS] attention"
IMAGE_TITLE = "model view"
# Written without a creator or date so the same inputs give the same bytes (tests compare them).
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def kept_figure(
    picture: Image.Image,
    heat: np.ndarray,
    rows: dict[str, list[tuple[str, Image.Image]]],
    heat_title: str = HEAT_TITLE,
    heat_label: str = HEAT_LABEL,
) -> Figure:
    """picture: what the model saw; heat: (grid rows, grid cols) attention spread over the whole picture;
    rows: one row of (title, picture with dropped patches dimmed) per method (or method x budget), one panel each.
    heat_title names what the heatmap covers where that is less than everything drawn (LLaVA-NeXT's base view);
    heat_label the colour bar's units (towers without [CLS] show the received-attention score).
    Panels share one size, tall enough for the tallest picture (a LLaVA-NeXT crop canvas can be 1 x 3).

    The heatmap is drawn on the dimmed picture with a colour bar in the attention's own units, so a reader sees
    both where the peaks are and how peaked they are.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D (rows, cols) grid of attention, got shape {heat.shape}")
    width, height = picture.size
    aspect = max(p.height / p.width for p in [picture, *(drawn for panels in rows.values() for _, drawn in panels)])
    cols = max(2, *(len(panels) for panels in rows.values())) if rows else 2
    panel_height = PANEL_INCHES * aspect + TITLE_INCHES
    total_width, total_height = PANEL_INCHES * cols + COLORBAR_INCHES, panel_height * (1 + len(rows))
    figure = Figure(figsize=(total_width, total_height), dpi=DPI)
    FigureCanvasAgg(figure)
    # Fixed margins rather than a layout engine: every panel the same size, the colour bar in the right margin
    # (or the empty cell beside the heatmap), and no solver whose result could vary.
    grid = figure.subplots(
        1 + len(rows),
        cols,
        squeeze=False,
        gridspec_kw={
            "left": 0.0,
            "right": PANEL_INCHES * cols / total_width,
            "bottom": 0.0,
            "top": 1 - TITLE_INCHES / total_height,
            "wspace": GAP_INCHES / (PANEL_INCHES - GAP_INCHES),
            "hspace": TITLE_INCHES / (panel_height - TITLE_INCHES),
        },
    )
    for axes in grid.flat:
        axes.set_axis_off()
    grid[0, 0].imshow(picture, interpolation="nearest")
    grid[0, 0].set_title(IMAGE_TITLE, fontsize=9)
    heat_axes = grid[0, 1]
    heat_axes.imshow(picture, interpolation="nearest", alpha=0.5)
    shown = heat_axes.imshow(heat, cmap="inferno", alpha=0.75, extent=(0, width, height, 0), interpolation="nearest")
    heat_axes.set_title(heat_title, fontsize=9)
    bar = figure.colorbar(shown, cax=heat_axes.inset_axes((1.03, 0.0, 0.05, 1.0)))
    bar.set_label(heat_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    for r, panels in enumerate(rows.values(), start=1):
        for c, (title, drawn) in enumerate(panels):
            grid[r, c].imshow(drawn, interpolation="nearest")
            grid[r, c].set_title(title, fontsize=9)
    return figure


def save_figure(figure: Figure, path: str | Path) -> list[Path]:
    """Write `path` (PNG) and the same name with .pdf beside it; the paths written."""
    png = Path(path)
    if png.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file (a .pdf is written beside it), got {str(path)!r}")
    png.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for target in (png, png.with_suffix(".pdf")):
        kind = target.suffix[1:].lower()
        figure.savefig(target, dpi=DPI, format=kind, metadata=METADATA[kind])
        written.append(target)
    return written
