"""Which patches survived pruning, drawn on the image the way the vision encoder saw it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from fastervlm.report import Report

PANEL_INCHES = 3.0  # each panel's width; kept_grid_figure's PNG is PANEL_INCHES * DPI pixels per panel wide
TITLE_INCHES = 0.4
GAP_INCHES = 0.1  # white space between panels
DPI = 100


def model_view(image: Image.Image, size: int = 336) -> Image.Image:
    """The size x size crop LLaVA-1.5's CLIP processor feeds the encoder: shortest edge -> size, centre crop.

    Mirrors transformers' CLIPImageProcessor (bicubic resize, long edge int(size * long / short), crop offset
    (excess) // 2), so patch (r, c) of the grid covers the same pixels the model saw.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (pixels of the square model view), got {size!r}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    resized = rgb.resize(new_size, Image.Resampling.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return resized.crop((left, top, left + size, top + size))


def kept_pixel_mask(kept: torch.Tensor, grid: tuple[int, int], size: int) -> np.ndarray:
    """(size, size) bool mask of the pixels inside kept patches; kept indexes the grid in raster order."""
    rows, cols = grid
    if rows < 1 or cols < 1 or rows > size or cols > size:
        raise ValueError(f"grid must be (rows, cols) with 1 <= rows, cols <= size={size}, got {grid!r}")
    kept = torch.as_tensor(kept)
    if kept.dim() != 1 or kept.dtype.is_floating_point or kept.dtype == torch.bool:
        raise ValueError(f"kept must be a 1-D integer tensor of patch indices, got {kept.dtype} {tuple(kept.shape)}")
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= rows * cols):
        raise ValueError(f"kept indices must be in [0, {rows * cols}) for a {rows} x {cols} grid, got {kept.tolist()}")
    patch = np.zeros(rows * cols, dtype=bool)
    patch[kept.cpu().numpy()] = True
    pixel_row = np.arange(size) * rows // size
    pixel_col = np.arange(size) * cols // size
    return patch.reshape(rows, cols)[pixel_row[:, None], pixel_col[None, :]]


def report_view(report: Report, sample: int = 0, view: int = 0) -> torch.Tensor:
    """Kept patch indices of one view of one sample, with an error naming what the report holds."""
    if not report.applied:
        raise ValueError(f"report of {report.method!r} did not apply, so it kept nothing to draw: {report.note}")
    if not 0 <= sample < len(report.kept_indices):
        raise ValueError(f"sample must be in [0, {len(report.kept_indices)}) for this report, got {sample!r}")
    views = report.kept_indices[sample]
    if not 0 <= view < len(views):
        raise ValueError(f"view must be in [0, {len(views)}) for sample {sample} of this report, got {view!r}")
    return views[view]


def overlay(
    image: Image.Image,
    kept: Report | torch.Tensor,
    grid: tuple[int, int] = (24, 24),
    *,
    sample: int = 0,
    view: int = 0,
    size: int = 336,
    dim: float = 0.25,
) -> Image.Image:
    """The model's view of `image` with kept patches as is and dropped ones darkened to `dim` of their brightness.

    kept: a Report (fastervlm.last_report(model)), drawn for its `sample` and `view`, or the kept patch indices
    themselves. The defaults are LLaVA-1.5's: a 24 x 24 grid on a 336 px view; for an in-LLM method on one
    LLaVA-1.5 image the report's indices over the image tokens are these patch indices.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, float)) or not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be a number in [0, 1] (brightness left to dropped patches), got {dim!r}")
    indices = report_view(kept, sample, view) if isinstance(kept, Report) else kept
    return dim_dropped(model_view(image, size), kept_pixel_mask(indices, grid, size), dim)


def dim_dropped(picture: Image.Image, mask: np.ndarray, dim: float) -> Image.Image:
    """The picture with pixels outside `mask` (kept pixels, same height x width) darkened to `dim` of their
    brightness: one rule for a single view, a LLaVA-NeXT crop canvas and a video frame alike."""
    pixels = np.asarray(picture.convert("RGB"))
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask must match the picture's (height, width) {pixels.shape[:2]}, got {mask.shape}")
    dimmed = np.rint(pixels * dim).astype(np.uint8)
    return Image.fromarray(np.where(mask[..., None], pixels, dimmed), "RGB")


def kept_grid_figure(
    image: Image.Image,
    kept_by_label: dict[str, torch.Tensor],
    grid: tuple[int, int],
    path: str | Path,
    *,
    size: int = 336,
    dim: float = 0.25,
) -> Path:
    """One PNG: the model's view of `image`, then one panel per label (e.g. "ratio 0.9 (58 kept)").

    The image is (1 + len(kept_by_label)) * PANEL_INCHES * DPI pixels wide and
    (PANEL_INCHES + TITLE_INCHES) * DPI high. Built on a bare Figure with the Agg canvas, so it never
    touches pyplot's global state or needs a display.
    """
    panels = [("model view", model_view(image, size))]
    panels += [(label, overlay(image, kept, grid, size=size, dim=dim)) for label, kept in kept_by_label.items()]
    width, height = PANEL_INCHES * len(panels), PANEL_INCHES + TITLE_INCHES
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    for i, (label, picture) in enumerate(panels):
        left = (i * PANEL_INCHES + GAP_INCHES / 2) / width
        axes = figure.add_axes((left, 0.0, (PANEL_INCHES - GAP_INCHES) / width, PANEL_INCHES / height))
        axes.imshow(picture, interpolation="nearest")
        axes.set_title(label, fontsize=9)
        axes.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The panel titles as PNG text too: a reader (or a test) gets them without OCR.
    titles = "\n".join(label for label, _ in panels)
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None, "Description": titles})
    return path
