"""LLaVA-NeXT crops in place and Video-LLaVA frames: each crop / frame dims exactly what its view dropped."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fastervlm.models.llava_next import NEWLINE, Layout
from fastervlm.viz.anyres import anyres_canvas, crops_mask, crops_overlay, kept_views
from fastervlm.viz.frames import frame_overlays, frame_views
from fastervlm.viz.overlay import model_view

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(1, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_canvas_is_the_best_grid_resolution_padded_as_the_processor_does():
    canvas, crops = anyres_canvas(picture(400, 300), PINPOINTS, 336)  # wide: select_best_resolution -> 336 x 672
    assert canvas.size == (672, 336) and crops == (1, 2)
    # Height 336 fills; width ceil(400 * 1.12) = 449 (the processor's float ceil), pasted at (672 - 449) // 2.
    cols = np.asarray(canvas).sum(axis=(0, 2))
    assert (cols[:111] == 0).all() and (cols[111:560] > 0).all() and (cols[560:] == 0).all()


def test_each_crop_dims_exactly_the_patches_its_view_dropped():
    generator = torch.Generator().manual_seed(0)
    views = [torch.randperm(576, generator=generator)[:k].sort().values for k in (58, 100, 7)]
    mask = crops_mask(views, (1, 2), (24, 24), 336)
    for c, kept in enumerate(views[1:]):
        tile = mask[:, 336 * c : 336 * (c + 1)]
        assert 1 - tile.mean() == 1 - len(kept) / 576  # dimmed fraction = dropped fraction of the crop's view
    image = picture(400, 300)
    drawn, again = (np.asarray(crops_overlay(image, views, PINPOINTS)) for _ in range(2))
    canvas = np.asarray(anyres_canvas(image, PINPOINTS, 336)[0])
    assert np.array_equal(drawn, again)
    assert np.array_equal(drawn[mask], canvas[mask])
    assert np.array_equal(drawn[~mask], np.rint(canvas[~mask] * 0.25).astype(np.uint8))


def test_in_llm_rows_map_to_views_through_the_layout():
    # 2 views of 4 patches: base rows 0-3, then crop patches with a newline after each pair.
    source = torch.tensor([0, 1, 2, 3, 4, 5, NEWLINE, 6, 7, NEWLINE])
    views = kept_views([torch.tensor([1, 3, 5, 6, 9])], Layout(source, 2, 4))
    assert [v.tolist() for v in views] == [[1, 3], [1]]


def test_frames_are_the_last_views_or_split_from_llm_rows():
    per_view = [torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([3])]
    assert [v.tolist() for v in frame_views(per_view, 2, 257, 256)] == [[1, 2], [3]]
    rows = torch.tensor([0, 1, 256, 257, 258, 300])  # frame 1: [CLS], patches 0 and 255; frame 2: [CLS], 0, 42
    assert [v.tolist() for v in frame_views([rows], 2, 257, 256)] == [[0, 255], [0, 42]]


def test_each_frame_dims_exactly_what_it_dropped():
    frames = [picture(320, 240) for _ in range(2)]
    views = [torch.arange(0, 256, 4), torch.arange(10)]
    for frame, kept, drawn in zip(frames, views, frame_overlays(frames, views), strict=True):
        view = np.asarray(model_view(frame, 224))
        dimmed = (np.asarray(drawn) != view).any(axis=2).mean()
        assert dimmed == 1 - len(kept) / 256
