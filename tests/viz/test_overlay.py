"""The kept-patch picture: aligned with what the encoder saw, dropped patches dimmed, kept ones untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastervlm.tiny import synthetic_images, tiny_processor
from fastervlm.viz import kept_grid_figure, model_view, overlay
from fastervlm.viz.overlay import DPI, PANEL_INCHES, TITLE_INCHES

GRID = (24, 24)
PATCH = 336 // 24


def noise_image() -> Image.Image:
    """336 x 336, so the view is the image itself, and no channel is 0, so dimming changes every pixel."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(64, 256, size=(336, 336, 3), dtype=np.uint8), "RGB")


def gradient_image(width: int, height: int) -> Image.Image:
    """Smooth, so bicubic resizing cannot overshoot to 0; not square, so the crop matters."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([80 + 170 * xx / width, 80 + 170 * yy / height, np.full_like(xx, 120)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def random_kept(k: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(GRID[0] * GRID[1], generator=generator)[:k].sort().values


@pytest.mark.parametrize("image", [noise_image(), gradient_image(400, 300), gradient_image(300, 450)])
def test_dropped_patches_dimmed_kept_patches_untouched(image):
    kept = random_kept(58)
    view = np.asarray(model_view(image))
    drawn = np.asarray(overlay(image, kept, GRID, dim=0.25))
    changed = (drawn != view).any(axis=-1)
    assert changed.sum() == (576 - 58) * PATCH * PATCH  # the dropped fraction of pixels: 518 / 576
    per_patch = changed.reshape(GRID[0], PATCH, GRID[1], PATCH).transpose(0, 2, 1, 3).reshape(576, -1)
    is_kept = np.zeros(576, dtype=bool)
    is_kept[kept.numpy()] = True
    assert not per_patch[is_kept].any()  # kept patches are pixel for pixel the model's view
    assert per_patch[~is_kept].all()  # every pixel of every dropped patch is dimmed
    dropped = np.repeat(np.repeat(~is_kept.reshape(GRID), PATCH, axis=0), PATCH, axis=1)
    assert np.array_equal(drawn[dropped], np.rint(view[dropped] * 0.25).astype(np.uint8))


def test_model_view_is_what_the_llava_processor_feeds_the_encoder():
    processor = tiny_processor().image_processor
    mean = np.array(processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(processor.image_std, dtype=np.float32)[:, None, None]
    for image in synthetic_images(4):
        pixels = processor(images=image, return_tensors="pt")["pixel_values"][0].numpy()
        seen = ((pixels * std + mean) * 255).transpose(1, 2, 0)
        assert np.abs(seen - np.asarray(model_view(image), dtype=np.float32)).max() < 0.5


def test_overlay_rejects_indices_outside_the_grid():
    with pytest.raises(ValueError, match=r"kept indices must be in \[0, 576\)"):
        overlay(noise_image(), torch.tensor([0, 576]), GRID)
    with pytest.raises(ValueError, match="dim must be"):
        overlay(noise_image(), torch.tensor([0]), GRID, dim=1.5)


def test_kept_grid_figure_writes_one_png_with_a_panel_per_label(tmp_path):
    image = synthetic_images(1)[0]
    kept = {f"ratio {r} ({k} kept)": random_kept(k) for r, k in [(0.5, 288), (0.9, 58), (0.95, 29)]}
    first = kept_grid_figure(image, kept, GRID, tmp_path / "a.png")
    second = kept_grid_figure(image, kept, GRID, tmp_path / "b.png")
    with Image.open(first) as png:
        assert png.format == "PNG"
        assert png.size == (round(4 * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI))
    assert first.read_bytes() == second.read_bytes()  # deterministic: same inputs, same file
