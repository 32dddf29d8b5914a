"""Video-LLaVA's frames with their kept patches: one picture per frame, as its video tower saw it."""

from __future__ import annotations

import torch
from PIL import Image

from fastervlm.viz.overlay import overlay


def frame_views(views: list[torch.Tensor], frames: int, rows_per_frame: int, patches: int) -> list[torch.Tensor]:
    """Kept patch indices of each of a sample's `frames` frames (more than one), whatever stage pruned it.

    A vision-stage report lists the sample's image views first and its frames last, so the frames are its last
    `frames` views. An in-LLM method reports one list of kept rows of a video-only sample's visual tokens:
    `rows_per_frame` rows per frame, of which the first rows_per_frame - patches (the Hugging Face port's [CLS])
    have no patch and are left out.
    """
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (one view of rows is otherwise ambiguous), got {frames}")
    if len(views) >= frames:
        return views[len(views) - frames :]
    if len(views) != 1:
        raise ValueError(f"views must hold at least {frames} frame views or one list of rows, got {len(views)}")
    frame, patch = views[0] // rows_per_frame, views[0] % rows_per_frame - (rows_per_frame - patches)
    return [patch[(frame == f) & (patch >= 0)].sort().values for f in range(frames)]


def frame_overlays(
    frames: list[Image.Image],
    views: list[torch.Tensor],
    grid: tuple[int, int] = (16, 16),
    *,
    size: int = 224,
    dim: float = 0.25,
) -> list[Image.Image]:
    """One overlay per frame, in order; views: one per frame, as `frame_views` gives them."""
    if len(frames) != len(views):
        raise ValueError(f"frames and views must pair up, got {len(frames)} frames and {len(views)} views")
    return [overlay(frame, kept, grid, size=size, dim=dim) for frame, kept in zip(frames, views, strict=True)]
