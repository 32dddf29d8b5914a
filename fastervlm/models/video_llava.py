"""Video-LLaVA (`VideoLlavaForConditionalGeneration`): images and 8-frame videos, one 16 x 16 CLIP view each.

Images go through the image tower with the [CLS] row cropped (256 rows per image). Videos go through the video
tower, and the Hugging Face port keeps every frame's [CLS] row (257 rows per frame, 8 x 257 = 2056 video tokens),
where the original Video-LLaVA (LanguageBind) cropped it (8 x 256 = 2048). Both share one projector.

The budget is per view (image or frame): each frame's patches are scored by that frame's own [CLS] row at the
feature layer and keep their top k in raster order, frames in their order (the paper: 90 % -> 26 per frame).

mode="stock" (default): prune the pipeline the Hugging Face model runs. Each frame's [CLS] row still reaches the
LLM, so a frame keeps 1 + k tokens (90 %: 8 x 27 = 216 of 2056). This is the default because only it reproduces
the unpruned model exactly at ratio 0, as the API promises.
mode="paper": the original Video-LLaVA's layout, as the paper measured it: the [CLS] row never reaches the LLM and
a frame keeps k of its 256 patches (90 %: 8 x 26 = 208). At ratio 0 this is the original's 2048-token layout, not
the Hugging Face model's 2056.
Images keep k of 256 in both modes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastervlm.models.base import ImageSelection, Modality
from fastervlm.models.llava import LlavaAdapter

TOWERS = {"image": "image_tower", "video": "video_tower"}


class VideoLlavaAdapter(LlavaAdapter):
    model_classes = ("VideoLlavaForConditionalGeneration",)
    supports_merging = False  # a merged token has no frame row to sit in
    towers = TOWERS
    options = {"mode": ("stock", "paper")}  # noqa: RUF012 - read-only class table

    def __init__(self, mode: str = "stock") -> None:
        self.mode = mode

    def modalities(self, model: nn.Module) -> list[Modality]:
        return [
            Modality("image", model.config.image_token_id, "get_image_features"),
            Modality("video", model.config.video_token_id, "get_video_features"),
        ]

    def feature_rows(self, modality: str, kept: torch.Tensor, num_rows: int) -> torch.Tensor:
        """Video rows are [CLS, patch 0, ...]: patch i is row i + 1, and stock mode keeps row 0 too."""
        if modality == "image":
            return kept
        patches = kept + 1
        if self.mode == "paper":
            return patches
        return torch.cat([patches.new_zeros(patches.shape[0], 1), patches], dim=1)

    def items(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """Images as in LLaVA; a video's frames are its views, each with its [CLS] row among the placeholders."""
        if modality == "image":
            return super().items(model, modality, inputs)
        videos = inputs["pixel_values_videos"]
        frames = videos.shape[1]
        return [(frames, frames * (self.patches_per_view(model) + 1))] * videos.shape[0]

    def patch_features(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """A frame's rows start with its [CLS] row, which no method ranks."""
        return features[:, 1:] if modality == "video" else features

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        encoded = dict(inputs.get("mm_encoder_outputs") or {})
        layer = inputs.pop("vision_feature_layer", None)
        strategy = inputs.pop("vision_feature_select_strategy", None)
        pixel_values = inputs.pop("pixel_values", None)
        legacy = inputs.pop("pixel_values_images", None)  # the name VideoLlavaImageProcessor still returns
        pixel_values = legacy if pixel_values is None else pixel_values
        videos = inputs.pop("pixel_values_videos", None)
        if pixel_values is not None:
            encoded["image"] = base.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=layer,
                vision_feature_select_strategy=strategy,
                return_dict=True,
            )
        if videos is not None:
            encoded["video"] = base.get_video_features(
                pixel_values_videos=videos, vision_feature_layer=layer, return_dict=True
            )
        return {**inputs, "mm_encoder_outputs": encoded} if encoded else inputs

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: torch.Tensor
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """One entry per view (image or frame), as in `selections`; a frame's first row is its [CLS]."""
        num_rows = pooler_output.shape[1]
        patches = torch.arange(num_rows, device=pooler_output.device)
        if modality == "video":
            patches = patches - 1
        return [(patches, [int((patches >= 0).sum())])] * pooler_output.shape[0]

    def selections(self, modality: str, pooler_output: torch.Tensor, kept: torch.Tensor) -> list[ImageSelection]:
        """One selection per view (image or frame): a frame fills its own span of the video's placeholders."""
        if pooler_output.shape[0] != kept.shape[0]:
            raise RuntimeError(
                f"expected one feature row block per view, got {pooler_output.shape[0]} for {kept.shape[0]} views"
            )
        num_rows = pooler_output.shape[1]
        num_patches = num_rows - 1 if modality == "video" else num_rows  # a frame's rows start with its [CLS]
        rows = self.feature_rows(modality, kept, num_rows)
        return [
            ImageSelection(rows=r, num_rows=num_rows, views=[k], view_sizes=[num_patches])
            for r, k in zip(rows, kept, strict=True)
        ]
