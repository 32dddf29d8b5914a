"""The `analyze shift|dispersion` plots: where the LLM's image attention falls, and how spread it is vs [CLS]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fastervlm.viz.attention_stats import Dispersion, Shift, column_means
from fastervlm.viz.figure import METADATA


def shift_figure(shift: Shift, title: str) -> Figure:
    """Mean share of the last token's image attention per position bin, with the uniform share for reference,
    so a lean towards the later image tokens reads off the bars directly."""
    shares = column_means(shift.shares)
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.bar(np.arange(1, len(shares) + 1), shares, color="tab:blue", label="mean share")
    axes.axhline(1 / len(shares), color="grey", linestyle="--", linewidth=1, label="uniform")
    axes.set_xlabel(f"image-token position bin (raster order, {len(shares)} bins, first to last)")
    axes.set_ylabel("share of image attention")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure


def dispersion_figure(dispersion: Dispersion, title: str) -> Figure:
    """Histograms of the normalised entropy (over log N, so 576 tokens and 576 patches compare on [0, 1]) of the
    LLM's last-token image attention and of the vision [CLS] attention, overlaid."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    edges = np.linspace(0.0, 1.0, 41)
    axes.hist(dispersion.llm_normalised, bins=edges, alpha=0.6, label="LLM last token -> image tokens")
    axes.hist(dispersion.cls_normalised, bins=edges, alpha=0.6, label="vision [CLS] -> patches")
    axes.set_xlabel("attention entropy / log N (1 = uniform)")
    axes.set_ylabel("images")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure


def png_path(path: str | Path) -> Path:
    """Refuse a non-PNG --plot before any image is analysed rather than after."""
    png = Path(path)
    if png.suffix.lower() != ".png":
        raise ValueError(f"--plot must name a .png file, got {str(path)!r}")
    return png


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write the figure as PNG without a creator stamp, so reruns give the same bytes."""
    png = png_path(path)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, metadata=METADATA["png"])
    return png
