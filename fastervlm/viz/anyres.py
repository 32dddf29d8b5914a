"""LLaVA-NeXT's crops drawn in place: the image as its processor tiles it for the best grid resolution.

The base view is LLaVA-1.5-like (one square view, drawn with `overlay` on the squashed image); the crops are
what is new. Each is a size x size tile of the image resized, aspect kept, to the grid resolution
`select_best_resolution` picks and padded (black, centred), as LlavaNextImageProcessor cuts them, in raster order.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import ChannelDimension
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from fastervlm.models import adapter_for
from fastervlm.models.llava_next import NEWLINE, Layout, layouts
from fastervlm.viz.overlay import dim_dropped, kept_pixel_mask


def anyres_canvas(image: Image.Image, pinpoints: list[list[int]], size: int) -> tuple[Image.Image, tuple[int, int]]:
    """The padded grid-resolution image the processor cuts into crops, and its (rows, cols) of size px crops.

    pinpoints: the processor's image_grid_pinpoints ([height, width] each). Resize (bicubic) and centred padding
    follow LlavaNextImageProcessor's _resize_for_patching / _pad_for_patching, so crop i covers the pixels the
    model saw as view 1 + i.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    target_height, target_width = select_best_resolution((height, width), pinpoints)
    if target_height % size or target_width % size:
        raise ValueError(f"pinpoints must be multiples of size={size}, got {target_height} x {target_width}")
    new_height, new_width = get_patch_output_size(np.asarray(rgb), (target_height, target_width), ChannelDimension.LAST)
    canvas = Image.new("RGB", (target_width, target_height))
    resized = rgb.resize((new_width, new_height), Image.Resampling.BICUBIC)
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas, (target_height // size, target_width // size)


def crops_mask(views: list[torch.Tensor], crops: tuple[int, int], grid: tuple[int, int], size: int) -> np.ndarray:
    """(rows * size, cols * size) bool mask of kept pixels on the canvas; views: base first, then the crops in
    raster order (as the report lists them), each the kept patch indices of its (grid) patches."""
    rows, cols = crops
    if len(views) != 1 + rows * cols:
        raise ValueError(
            f"views must hold the base view and {rows} x {cols} = {rows * cols} crops, got {len(views)} views"
        )
    tiles = [kept_pixel_mask(kept, grid, size) for kept in views[1:]]
    return np.block([tiles[r * cols : (r + 1) * cols] for r in range(rows)])


def stock_layouts(model: nn.Module, image_sizes: torch.Tensor) -> list[Layout]:
    """Each image's packed layout in the unpruned model (stock mode), from its own pack_image_features."""
    config = model.config
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    counts = [image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size) for size in image_sizes]
    shapes = [torch.empty(views, patches, 0) for views in counts]
    pack = adapter_for(model).base(model).pack_image_features
    return layouts(pack, shapes, image_sizes, config.vision_feature_select_strategy)


def kept_views(views: list[torch.Tensor], layout: Layout) -> list[torch.Tensor]:
    """Kept patch indices per view (base, then crops) of one image, whatever stage pruned it.

    A vision-stage report already lists one entry per view. An in-LLM method (FastV, ...) reports one list of
    kept rows of the packed image tokens; the model's own layout (`Layout.source`) says which view and patch each
    row is, and newline rows, which have no patch, are left out.
    """
    if len(views) == layout.views:
        return views
    if len(views) != 1:
        raise ValueError(f"views must hold {layout.views} views or one list of packed rows, got {len(views)}")
    source = layout.source.to(views[0].device)[views[0]]
    source = source[source != NEWLINE]
    return [source[source // layout.patches == v].sort().values % layout.patches for v in range(layout.views)]


def crops_overlay(
    image: Image.Image,
    views: list[torch.Tensor],
    pinpoints: list[list[int]],
    grid: tuple[int, int] = (24, 24),
    *,
    size: int = 336,
    dim: float = 0.25,
) -> Image.Image:
    """The canvas of `image` with each crop's dropped patches darkened to `dim` (the padding too: nothing there
    is kept in the stock layout, since unpadding cuts it). views: as `kept_views` gives them."""
    canvas, crops = anyres_canvas(image, pinpoints, size)
    return dim_dropped(canvas, crops_mask(views, crops, grid, size), dim)
