"""Independent LLaVA-NeXT references: eager [CLS] maps per view, layouts derived by hand, hand-built sequences.

Nothing here imports fastervlm's adapter or runtime. The anyres layouts are re-derived from the published
rules (stitch crops into one grid, cut rows or columns of padding, a newline after every grid row; or the
paper's 'spatial' merge), and `test_reference_layouts_match_stock_packing` checks them against the stock model.
"""

from __future__ import annotations

import torch
from transformers import LlavaNextForConditionalGeneration
from transformers.image_processing_utils import select_best_resolution
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fastervlm.budget import kept_count
from tests.reference import eager_cls_scores

SIDE = 24  # patches per view side
N = SIDE * SIDE
NEWLINE = -1


def crop_grid(image_size: list[int], pinpoints: list[list[int]], view: int = 336) -> tuple[int, int]:
    """(rows, cols) of crops: the pinpoint the anyres rule picks for this (height, width), in views."""
    height, width = select_best_resolution(image_size, pinpoints)
    return height // view, width // view


def views_per_image(image_sizes: torch.Tensor, pinpoints: list[list[int]]) -> list[int]:
    return [1 + r * c for r, c in (crop_grid(s.tolist(), pinpoints) for s in image_sizes)]


def real_views(pixel_values: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The processor pads every image to the batch's most views; keep each image's real ones."""
    return torch.cat([p[:n] for p, n in zip(pixel_values, counts, strict=True)])


def eager_view_scores(
    model: LlavaNextForConditionalGeneration, inputs: dict, pinpoints: list[list[int]]
) -> list[torch.Tensor]:
    """Per image, (views, 576): each view's own [CLS] row from eager attention maps of the stock tower."""
    counts = views_per_image(inputs["image_sizes"], pinpoints)
    return list(eager_cls_scores(model, real_views(inputs["pixel_values"], counts)).split(counts))


def top_k(scores: list[torch.Tensor], ratio: float, layouts: list[list[int]] | None = None) -> list[list[torch.Tensor]]:
    """Per image, per view: the top round((1 - ratio) * 576) patches of that view, ascending.

    With layouts, a view picks among the patches its layout carries first (unpadding cuts some crop patches),
    so it keeps k that reach the LLM whenever it has k.
    """
    k = kept_count(N, ratio)
    out = []
    for i, s in enumerate(scores):
        if layouts is not None:
            carried = torch.zeros(s.numel(), dtype=torch.bool)
            carried[[source for source in layouts[i] if source != NEWLINE]] = True
            s = s.masked_fill(~carried.view_as(s), float("-inf"))
        out.append(list(s.topk(k, dim=-1).indices.sort(dim=-1).values))
    return out


def stock_layout(image_size: list[int], pinpoints: list[list[int]]) -> list[int]:
    """Source of each packed row (view * 576 + patch, or NEWLINE): base, then the unpadded grid, newline per row.

    Unpadding (transformers' unpad_image): the grid is H x W patches for an image of height h and width w
    resized to fit and centred; the side with slack keeps round(h * W / w) rows (or columns) in the middle.
    """
    rows, cols = crop_grid(image_size, pinpoints)
    height, width = rows * SIDE, cols * SIDE
    h, w = image_size
    top, left, bottom, right = 0, 0, height, width
    if w / h > width / height:
        pad = (height - int(round(h * (width / w), 7))) // 2
        top, bottom = pad, height - pad
    else:
        pad = (width - int(round(w * (height / h), 7))) // 2
        left, right = pad, width - pad
    layout = list(range(N))
    for r in range(top, bottom):
        layout += [grid_source(r, c, cols) for c in range(left, right)]
        layout.append(NEWLINE)
    return layout


def paper_layout(rows: int = 2, cols: int = 2) -> list[int]:
    """The paper's 'spatial' merge: base view, then the stitched grid in raster order; nothing cut or added."""
    return list(range(N)) + [grid_source(r, c, cols) for r in range(rows * SIDE) for c in range(cols * SIDE)]


def grid_source(r: int, c: int, cols: int) -> int:
    """Patch (r, c) of the stitched crop grid: crop (r // 24, c // 24), which is view 1 + its raster index."""
    return (1 + (r // SIDE) * cols + c // SIDE) * N + (r % SIDE) * SIDE + c % SIDE


def kept_rows(layout: list[int], kept: list[torch.Tensor], newline: str) -> list[int]:
    """Rows of one packed image that reach the LLM: kept patches where the layout has them, and newlines.

    newline: "all" keeps every newline; "row" those ending a grid row with a kept patch; "none" none.
    """
    chosen = {v * N + int(p) for v, view in enumerate(kept) for p in view}
    rows, pending, row_has_kept = [], [], False
    for i, source in enumerate(layout):
        if source != NEWLINE:
            if source in chosen:
                pending.append(i)
                row_has_kept |= source >= N or len(kept) == 1
            continue
        rows += pending + ([i] if newline == "all" or (newline == "row" and row_has_kept) else [])
        pending, row_has_kept = [], False
    return rows + pending


def reached(layout: list[int], rows: list[int], views: int) -> list[list[int]]:
    """Per view, the patches (ascending) among the given rows: what the report must list."""
    sources = sorted(layout[i] for i in rows if layout[i] != NEWLINE)
    return [[s % N for s in sources if s // N == v] for v in range(views)]


def stock_packed(model: LlavaNextForConditionalGeneration, inputs: dict) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], return_dict=True
        )
    return list(out.pooler_output)


def projected_views(model: LlavaNextForConditionalGeneration, views: torch.Tensor) -> torch.Tensor:
    """(views, 576, text dim): the stock tower's layer -2 patches (CLS dropped), through the stock projector."""
    with torch.no_grad():
        hidden = model.model.vision_tower(views, output_hidden_states=True).hidden_states
        return model.model.multi_modal_projector(hidden[model.config.vision_feature_layer][:, 1:])


def paper_packed(model: LlavaNextForConditionalGeneration, inputs: dict) -> list[torch.Tensor]:
    """Spatially merged features built from the stock tower and projector: 5 x 576 rows per image."""
    layout = torch.tensor(paper_layout())
    out = []
    for pixels in inputs["pixel_values"]:
        flat = projected_views(model, pixels).flatten(0, 1)
        out.append(flat[layout])
    return out


def short_inputs(
    model: LlavaNextForConditionalGeneration, inputs: dict, packed: list[torch.Tensor], rows: list[list[int]]
) -> dict:
    """The batch a user would build by hand: each image's placeholders cut to its kept rows, features pre-encoded.

    Images fill the placeholder runs in order; a run is as long as its image's packed features.
    """
    token, pad = model.config.image_token_id, model.config.pad_token_id
    sequences, image = [], 0
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        ids, short, left = ids[mask.bool()].tolist(), [], 0
        for t in ids:
            if t != token:
                short.append(t)
                continue
            if left == 0:
                short.extend([token] * len(rows[image]))
                left = len(packed[image])
                image += 1
            left -= 1
        sequences.append(short)
    width = max(len(s) for s in sequences)
    features = [f[r] for f, r in zip(packed, rows, strict=True)]
    return {
        "input_ids": torch.tensor([[pad] * (width - len(s)) + s for s in sequences]),
        "attention_mask": torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences]),
        "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)},
    }
