"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): LLaVA-NeXT's anyres on a SigLIP tower.

The stock pipeline is LLaVA-NeXT's (base view + crops, unpadding, a newline token ending every grid row), so the
LLaVA-NeXT adapter's layouts, candidates and per-view budgets serve as they are; what differs:
- SigLIP has no [CLS] token: [CLS]-scoring methods run the "received attention" proxy (FasterVLMConfig.score) on
  the feature layer (-1), per view.
- `pack_image_features` takes (image_features, image_sizes, image_newline, vision_aspect_ratio); a sample with
  several images gets one view per image (no crops) plus a newline.
- "anyres_max_9": when an image's unpadded grid exceeds 9 views' worth of patches by 10 %, the stock code shrinks
  it by bilinear interpolation, which blends patches into new tokens that belong to no view; such an image is
  refused with a message (the 9-crop limit is only reached by images larger than 3 x 3 views).
- Videos: every frame goes through the tower as a view, is projected, then pooled 2 x 2 (bilinear: 27 x 27 ->
  14 x 14), and the video ends in one newline. A frame's budget applies to its pooled tokens, picked after the
  pooling by the received attention pooled the same way (each pooled token scores as the patches it blends); the
  newline is always kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from fastervlm.models.base import EncodedLayout, Modality, VisionAttention
from fastervlm.models.llava_next import NEWLINE, Layout, LlavaNextAdapter
from fastervlm.runtime.wrap import wrap


def onevision_layouts(
    pack: Callable[..., Any], features: list[torch.Tensor], image_sizes: Any, aspect: str
) -> list[Layout]:
    """The stock packing run on index-valued features (see llava_next.layouts); interpolated rows are refused."""
    dummies = [
        torch.arange(f.shape[0] * f.shape[1], dtype=torch.float32).view(f.shape[0], f.shape[1], 1) for f in features
    ]
    packed, _ = pack(dummies, image_sizes, image_newline=torch.tensor([float(NEWLINE)]), vision_aspect_ratio=aspect)
    found = []
    for p, f in zip(packed, features, strict=True):
        source = p[:, 0]
        if not torch.equal(source, source.round()):
            raise ValueError(
                f"an image of {f.shape[0]} views exceeds vision_aspect_ratio={aspect!r}, so LLaVA-OneVision "
                "interpolates its crop grid into tokens of no single patch, which pruning cannot place; resize it "
                "below that limit (a grid of at most 3 x 3 views) to prune it"
            )
        found.append(Layout(source.long(), f.shape[0], f.shape[1]))
    return found


@dataclass
class LlavaOnevisionAdapter(LlavaNextAdapter):
    """LLaVA-OneVision: the LLaVA-NeXT adapter's stock mode with OneVision's packing and a SigLIP tower.

    newline: "all" (default), "row" or "none", as for LLaVA-NeXT's stock mode.
    """

    model_classes = ("LlavaOnevisionForConditionalGeneration",)
    options = {"newline": ("all", "row", "none")}  # noqa: RUF012 - read-only class table
    towers = {"image": "vision_tower", "video": "vision_tower"}  # noqa: RUF012 - one tower for both

    def modalities(self, model: nn.Module) -> list[Modality]:
        return [
            Modality("image", model.config.image_token_id, "get_image_features"),
            Modality("video", model.config.video_token_id, "get_video_features"),
        ]

    def after_encoding(self, modality: str) -> bool:
        """Video frames are pooled after the projector, so their tokens are picked from the encoder's output."""
        return modality == "video"

    def pooled_side(self, model: nn.Module) -> int:
        """The side of a frame's pooled grid: apply_pooling's ceil(side / 2) (27 -> 14)."""
        vision = model.config.vision_config
        return math.ceil(vision.image_size // vision.patch_size / 2)

    def encoded_layout(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> EncodedLayout:
        """Per video, its frames of pooled tokens, then the newline that ends it."""
        videos, frames = inputs["pixel_values_videos"].shape[:2]
        side = self.pooled_side(model)
        return EncodedLayout([(frames, (side, side))] * videos, extra=1)

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """Images: the recorded anyres layout (LLaVA-NeXT's); a video: its frames' pooled tokens, then a newline."""
        if modality != "video":
            return super().row_sources(model, modality, inputs, pooler_output)
        layout = self.encoded_layout(model, modality, inputs)
        out = []
        for (frames, (rows, cols)), features in zip(layout.items, pooler_output, strict=True):
            tokens = frames * rows * cols
            newline = torch.full((layout.extra,), -1)
            out.append((torch.cat([torch.arange(tokens), newline]).to(features.device), [rows * cols] * frames))
        return out

    def merged_scores(self, model: nn.Module, modality: str, scores: torch.Tensor) -> torch.Tensor:
        """(frames, N) patch scores pooled as apply_pooling pools the features: bilinear to the pooled grid."""
        vision = model.config.vision_config
        side, pooled = vision.image_size // vision.patch_size, self.pooled_side(model)
        grid = scores.view(-1, 1, side, side)
        return F.interpolate(grid, size=[pooled, pooled], mode="bilinear").flatten(1)

    def check(self, model: nn.Module, needs: frozenset[str], score_layer: int | None) -> None:
        config = model.config
        if config.vision_feature_select_strategy != "full":
            raise ValueError(
                "vision_feature_select_strategy must be 'full' (SigLIP: every patch, no [CLS]) for pruning, "
                f"got {config.vision_feature_select_strategy!r}"
            )
        if not isinstance(config.vision_feature_layer, int):
            raise ValueError(
                f"vision_feature_layer must be a single int for pruning, got {config.vision_feature_layer!r}"
            )
        if "instruction" in needs:
            raise ValueError(
                f"this method rates patches against the instruction with the CLIP text tower matching the vision "
                f"tower, and {type(model).__name__}'s is {type(model.model.vision_tower).__name__}; use a method "
                "that needs no text tower (fastervlm, divprune, random, or an in-LLM one) on this model"
            )
        if "vision_cls_row" in needs:
            tower = type(model.model.vision_tower).__name__
            raise ValueError(
                f"score='cls' needs a vision [CLS] token, and {type(model).__name__}'s vision tower ({tower}) has "
                "none; use score='received' (this model's default) with a method that offers it (fastervlm)"
            )
        if "vision_received" in needs:
            self.vision_received(model, "image", score_layer)

    def default_score(self, model: nn.Module) -> str:
        return "received"

    def vision_received(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionAttention:
        """SigLIP's attention at the feature layer: every view is its own batch row, so q/k per view suffice."""
        return self.vision_attention(model, modality, score_layer)

    def install(self, model: nn.Module) -> list[Callable[[], None]]:
        """Record each encode's layout from the stock packing."""
        base = self.base(model)
        self._stock_pack = base.pack_image_features

        def pack(
            original: Callable[..., Any],
            image_features: list[torch.Tensor],
            image_sizes: Any,
            image_newline: torch.Tensor | None = None,
            vision_aspect_ratio: str = "anyres_max_9",
        ) -> tuple[list[torch.Tensor], torch.Tensor]:
            self._layouts = onevision_layouts(original, image_features, image_sizes, vision_aspect_ratio)
            return original(
                image_features, image_sizes, image_newline=image_newline, vision_aspect_ratio=vision_aspect_ratio
            )

        return [wrap(base, "pack_image_features", pack)]

    def candidates(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> torch.Tensor | None:
        """The patches unpadding keeps, per view, from the stock packing run before the encoder (as LLaVA-NeXT)."""
        if modality == "video":
            return None
        config = model.config
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        sizes = inputs["image_sizes"]
        per_sample = inputs.get("batch_num_images")
        patched = [True] * len(sizes) if per_sample is None else [n == 1 for n in per_sample for _ in range(n)]
        counts = [
            image_size_to_num_patches(size, config.image_grid_pinpoints, vision.image_size) if crop else 1
            for size, crop in zip(sizes, patched, strict=True)
        ]
        shapes = [torch.empty(views, patches, 0) for views in counts]
        aspect = inputs.get("vision_aspect_ratio") or "anyres_max_9"
        masks = []
        for layout in onevision_layouts(self._stock_pack, shapes, sizes, aspect):
            mask = torch.zeros(layout.views * patches, dtype=torch.bool)
            mask[layout.source[layout.source != NEWLINE]] = True
            masks.append(mask.view(layout.views, patches))
        return torch.cat(masks).to(inputs["pixel_values"].device)

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        encoded = dict(inputs.get("mm_encoder_outputs") or {})
        layer = inputs.pop("vision_feature_layer", None)
        strategy = inputs.pop("vision_feature_select_strategy", None)
        pixel_values = inputs.pop("pixel_values", None)
        if pixel_values is not None:
            encoded["image"] = base.get_image_features(
                pixel_values=pixel_values,
                image_sizes=inputs.pop("image_sizes", None),
                vision_feature_layer=layer,
                vision_feature_select_strategy=strategy,
                vision_aspect_ratio=inputs.pop("vision_aspect_ratio", None),
                batch_num_images=inputs.pop("batch_num_images", None),
                return_dict=True,
            )
        videos = inputs.pop("pixel_values_videos", None)
        if videos is not None:
            encoded["video"] = base.get_video_features(
                pixel_values_videos=videos,
                vision_feature_layer=layer,
                vision_feature_select_strategy=strategy,
                return_dict=True,
            )
        return {**inputs, "mm_encoder_outputs": encoded} if encoded else inputs
