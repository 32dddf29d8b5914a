"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`): anyres, a base view plus 2-4 crops of 576 patches per image.

The budget is per view, as in the paper: every view (base and each crop) keeps the top k of its own patches,
scored by its own [CLS] row. Two layouts decide where the kept patches go:

- mode="stock" (default): the model's own pipeline. Crops are stitched into one grid, unpadded (the rows or
  columns that only hold the processor's padding are cut) and every grid row ends in a newline token. Kept
  patches keep their place in that layout. A view picks its top k among the patches unpadding leaves it
  (`candidates`), so k per view means k tokens in the LLM; the reference ranks all 576 and lets unpadding cut
  some picks, which can leave a crop with none. The report lists per view the patches that reach the LLM.
  `newline` decides the newline tokens: "all" keeps every one (the reference and DESIGN.md), "row" only those
  ending a grid row that still holds a kept patch, "none" drops them all (even at ratio 0).
- mode="paper": what the paper ran. The anyres grid is pinned to one 2 x 2 crop layout (672 x 672 for 336 px
  views) and merged 'spatially': base tokens, then the crops' tokens in the stitched grid's raster order, no
  unpadding, no newline tokens; 5 x 576 = 2880 tokens per image (95 % -> 5 x 29 = 145). The processor must
  count the same placeholders: `paper_processor(processor)` gives such a copy of the stock one.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, image_size_to_num_patches

from fastervlm.models.base import ImageSelection
from fastervlm.models.llava import LlavaAdapter
from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.wrap import wrap

NEWLINE = -1  # a layout's source index for a newline row
PAPER_CROPS = 2  # crops per side of the paper's pinned grid: 672 = 2 x 336


def paper_grid(view_size: int) -> list[list[int]]:
    """The paper's only anyres resolution, as grid pinpoints: 2 x 2 views (672 x 672 for 336 px views)."""
    return [[PAPER_CROPS * view_size, PAPER_CROPS * view_size]]


class Layout(NamedTuple):
    """Where each row of one image's packed features comes from: view * patches + patch, or NEWLINE."""

    source: torch.Tensor  # (rows,) long
    views: int
    patches: int


def layouts(pack: Callable[..., Any], features: list[torch.Tensor], image_sizes: Any, strategy: str) -> list[Layout]:
    """Run a packing function on index-valued features to learn its layout, rather than re-deriving it.

    Unpadding and newline placement are the model's own business; packing a (views, patches, 1) tensor holding
    each patch's index, with a newline of -1, reads them off exactly, so a copy of the rules cannot drift from
    the model's. float32 represents these indices (< 2**24) exactly.
    """
    dummies = [
        torch.arange(f.shape[0] * f.shape[1], dtype=torch.float32).view(f.shape[0], f.shape[1], 1) for f in features
    ]
    newline = torch.tensor([float(NEWLINE)])
    packed, _ = pack(dummies, image_sizes, vision_feature_select_strategy=strategy, image_newline=newline)
    return [Layout(p[:, 0].long(), f.shape[0], f.shape[1]) for p, f in zip(packed, features, strict=True)]


def rows_with_kept_patch(layout: Layout, kept: torch.Tensor) -> torch.Tensor:
    """Newline rows that end a grid row holding at least one kept patch.

    A newline closes the patches since the previous newline. The base view of an image with crops precedes the
    first grid row and has no newline of its own, so its patches do not count.
    """
    source = layout.source
    newline = source == NEWLINE
    first_grid = layout.patches if layout.views > 1 else 0
    segment = newline.long().cumsum(0) - newline.long()  # newlines before each row: the grid row it belongs to
    has_kept = torch.zeros(int(newline.sum()) + 1, dtype=torch.bool, device=source.device)
    has_kept[segment[kept & (source >= first_grid)]] = True
    return newline & has_kept[segment]


@dataclass
class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT: the LLaVA-1.5 adapter's modules, plus anyres views, layouts and the paper mode.

    mode: "stock" (the model's own anyres pipeline) or "paper" (pinned 2 x 2 grid, spatial merge).
    newline: stock mode's newline tokens, "all" (default), "row" or "none"; paper mode has none.
    """

    model_classes = ("LlavaNextForConditionalGeneration",)
    supports_merging = False  # merged tokens have no place in the anyres grid the packing lays out
    options = {"mode": ("stock", "paper"), "newline": ("all", "row", "none")}  # noqa: RUF012 - read-only class table

    mode: str = "stock"
    newline: str | None = None
    _layouts = CallLocal()  # of the current encode, per call (runtime/call.py): concurrent encodes keep their own
    _stock_pack: Callable[..., Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode == "paper" and self.newline is not None:
            raise ValueError(
                f"newline={self.newline!r} applies to mode='stock' only: mode='paper' merges without newline tokens"
            )
        if self.mode == "stock" and self.newline is None:
            self.newline = "all"

    @classmethod
    def input_processor(cls, processor: Any, **options: Any) -> Any:
        """Paper mode counts 2880 placeholders per image: its inputs come from paper_processor."""
        return paper_processor(processor) if options.get("mode") == "paper" else processor

    def install(self, model: nn.Module) -> list[Callable[[], None]]:
        """Record each encode's layout (both modes); in paper mode also pin the grid and pack spatially."""
        base, config = self.base(model), model.config
        undos: list[Callable[[], None]] = []
        if self.mode == "paper":
            stock_grid = config.image_grid_pinpoints
            config.image_grid_pinpoints = paper_grid(config.vision_config.image_size)
            undos.append(lambda: setattr(config, "image_grid_pinpoints", stock_grid))
            undos.append(wrap(base, "get_image_features", self._check_paper_views))

        spatial = functools.partial(spatial_pack, config)
        self._stock_pack = base.pack_image_features

        def pack(
            original: Callable[..., Any],
            image_features: list[torch.Tensor],
            image_sizes: Any,
            vision_feature_select_strategy: str,
            image_newline: torch.Tensor | None = None,
        ) -> tuple[list[torch.Tensor], torch.Tensor]:
            packer = original if self.mode == "stock" else spatial
            self._layouts = layouts(packer, image_features, image_sizes, vision_feature_select_strategy)
            return packer(
                image_features,
                image_sizes,
                vision_feature_select_strategy=vision_feature_select_strategy,
                image_newline=image_newline,
            )

        undos.append(wrap(base, "pack_image_features", pack))
        return undos

    def candidates(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> torch.Tensor | None:
        """Stock mode: the patches unpadding keeps, per view, so each view's k are k that reach the LLM.

        The layout comes from the model's own packing run on index-valued features before the encoder runs;
        the spatial merge of paper mode keeps every patch.
        """
        if self.mode == "paper":
            return None
        config = model.config
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        sizes = inputs["image_sizes"]
        counts = [image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size) for size in sizes]
        shapes = [torch.empty(views, patches, 0) for views in counts]
        found = layouts(self._stock_pack, shapes, sizes, config.vision_feature_select_strategy)
        masks = []
        for layout in found:
            mask = torch.zeros(layout.views * patches, dtype=torch.bool)
            mask[layout.source[layout.source != NEWLINE]] = True
            masks.append(mask.view(layout.views, patches))
        return torch.cat(masks).to(inputs["pixel_values"].device)

    def items(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """Per image, its views (base + crops) and its packed rows (paper mode: every patch, no newlines)."""
        config = model.config
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        sizes = inputs["image_sizes"]
        counts = [image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size) for size in sizes]
        if self.mode == "paper":
            return [(views, views * patches) for views in counts]
        shapes = [torch.empty(views, patches, 0) for views in counts]
        found = layouts(self._stock_pack, shapes, sizes, config.vision_feature_select_strategy)
        return [(layout.views, len(layout.source)) for layout in found]

    def _check_paper_views(
        self, original: Callable[..., Any], pixel_values: torch.Tensor, image_sizes: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Refuse pixels cut for another grid before torch.split fails on them deep inside the model."""
        views = 1 + PAPER_CROPS * PAPER_CROPS
        images = len(image_sizes)
        per_image = pixel_values.shape[1] if pixel_values.dim() == 5 else pixel_values.shape[0] / max(images, 1)
        if per_image != views:
            raise ValueError(
                f"pixel_values hold {per_image:g} views per image; mode='paper' needs {views} (base + "
                f"{PAPER_CROPS} x {PAPER_CROPS} crops of the pinned grid). Preprocess with "
                "fastervlm.models.llava_next.paper_processor(processor)"
            )
        return original(pixel_values, image_sizes, *args, **kwargs)

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super().encode(base, inputs)
        image = (inputs.get("mm_encoder_outputs") or {}).get("image")
        input_ids = inputs.get("input_ids")
        if image is not None and input_ids is not None:
            self._check_placeholders(base, input_ids, image.pooler_output)
        return inputs

    def _check_placeholders(self, base: nn.Module, input_ids: torch.Tensor, pooled: list[torch.Tensor]) -> None:
        """Name the processor as the cause: the layouts of the two modes need different placeholder counts."""
        tokens = int((input_ids == base.config.image_token_id).sum())
        rows = sum(len(f) for f in pooled)
        if tokens == rows:
            return
        head = f"input_ids hold {tokens} image tokens; in mode={self.mode!r} the {len(pooled)} image(s) give {rows}"
        if self.mode == "paper":
            raise ValueError(
                f"{head} ({rows // max(len(pooled), 1)} per image: base + crops, no unpadding, no newlines); the "
                "stock processor counts the stock layout. Preprocess with "
                "fastervlm.models.llava_next.paper_processor(processor)"
            )
        raise ValueError(
            f"{head}; inputs made by paper_processor need fastervlm.prune(model, ..., mode='paper'), and a stock "
            "processor must share the model's image_grid_pinpoints"
        )

    def selections(self, modality: str, pooler_output: list[torch.Tensor], kept: torch.Tensor) -> list[ImageSelection]:
        found, self._layouts = self._layouts, None
        if found is None or len(found) != len(pooler_output) or sum(x.views for x in found) != kept.shape[0]:
            raise RuntimeError(
                f"the layout pack_image_features recorded does not match this encode ({len(pooler_output)} images, "
                f"{kept.shape[0]} views)"
            )
        result, start = [], 0
        for features, layout in zip(pooler_output, found, strict=True):
            views = kept[start : start + layout.views]
            start += layout.views
            result.append(self._selection(layout._replace(source=layout.source.to(kept.device)), views))
            if result[-1].num_rows != len(features):
                raise RuntimeError(f"layout has {result[-1].num_rows} rows, the packed image {len(features)}")
        return result

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """The layout pack_image_features recorded: base view, then the crops stitched, newlines among them."""
        found, self._layouts = self._layouts, None
        if found is None or len(found) != len(pooler_output):
            raise RuntimeError(f"the layout pack_image_features recorded does not match {len(pooler_output)} images")
        return [(x.source.to(f.device), [x.patches] * x.views) for x, f in zip(found, pooler_output, strict=True)]

    def _selection(self, layout: Layout, kept: torch.Tensor) -> ImageSelection:
        """Kept rows of one packed image: its views' kept patches where the layout has them, plus newlines."""
        source, patches = layout.source, layout.patches
        chosen = torch.zeros(layout.views * patches, dtype=torch.bool, device=source.device)
        offsets = torch.arange(layout.views, device=source.device).unsqueeze(1) * patches
        chosen[(kept + offsets).flatten()] = True
        is_patch = source != NEWLINE
        keep = is_patch & chosen[source.clamp(min=0)]
        if self.newline == "all":
            keep |= ~is_patch
        elif self.newline == "row":
            keep |= rows_with_kept_patch(layout, keep)
        reached = source[keep & is_patch]
        views = [reached[reached // patches == v].sort().values % patches for v in range(layout.views)]
        return ImageSelection(
            rows=keep.nonzero().squeeze(1), num_rows=len(source), views=views, view_sizes=[patches] * layout.views
        )


def spatial_pack(
    config: Any,
    image_features: list[torch.Tensor],
    image_sizes: Any,
    vision_feature_select_strategy: str | None = None,
    image_newline: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The paper's 'spatial' merge: base view, then the crops stitched in grid raster order; no unpad, no newline.

    As LLaVA-NeXT's original code does for mm_patch_merge_type='spatial' (view(rows, cols, h, w, dim),
    permute(0, 2, 1, 3, 4), flatten); transformers only implements 'spatial_unpad'. Takes pack_image_features'
    arguments so it can stand in for it; the strategy is always 'default' here and the newline is unused by design.
    """
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    packed = []
    for feature, size in zip(image_features, image_sizes, strict=True):
        if len(feature) == 1:
            packed.append(feature[0])
            continue
        rows, cols = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, vision.image_size)
        crops = feature[1:].view(rows, cols, side, side, -1).permute(0, 2, 1, 3, 4).flatten(0, 3)
        packed.append(torch.cat((feature[0], crops)))
    lengths = torch.tensor([len(p) for p in packed], dtype=torch.long, device=image_features[0].device)
    return packed, lengths


def paper_feature_count(processor: Any, orig_height: int, orig_width: int, height: int, width: int) -> int:
    """Placeholders for one image under the spatial merge: every view's patches, no unpadding, no newlines.

    Replaces LlavaNextProcessor._get_number_of_features (transformers 5.23), which counts the stock layout; like
    it, includes num_additional_image_tokens, which the processor then subtracts for the 'default' strategy.
    """
    grid_height, grid_width = select_best_resolution(
        [orig_height, orig_width], processor.image_processor.image_grid_pinpoints
    )
    views = 1 + (grid_height // height) * (grid_width // width)
    per_view = (height // processor.patch_size) * (width // processor.patch_size)
    return views * per_view + processor.num_additional_image_tokens


def paper_processor(processor: Any) -> Any:
    """A copy of a stock LlavaNextProcessor that preprocesses for mode='paper'.

    It cuts every image on the pinned 2 x 2 grid and writes base + 4 crops x 576 = 2880 placeholders per image
    (336 px views). The count is an instance-level override, so it is lost by save_pretrained / from_pretrained:
    call paper_processor again after loading. The stock processor is left untouched.
    """
    if type(processor).__name__ != "LlavaNextProcessor":
        raise TypeError(f"processor must be a LlavaNextProcessor, got {type(processor).__name__}")
    paper = copy.deepcopy(processor)
    paper.image_processor.image_grid_pinpoints = paper_grid(paper.image_processor.crop_size["height"])
    # MethodType, not a closure: a deepcopy of the paper processor then counts with its own pinpoints.
    paper._get_number_of_features = types.MethodType(paper_feature_count, paper)
    return paper
