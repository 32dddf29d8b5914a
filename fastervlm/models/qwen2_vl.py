"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`,
`Qwen3VLForConditionalGeneration`).

Dynamic resolution: an image of t x h x w patches (t = 1 for a still image) becomes t x (h/2) x (w/2) tokens after
the 2 x 2 patch merger, so views differ in size and the budget applies per image, to its merged tokens; a video's
views are its frame groups (2 frames each), each with its own budget. The tower has no [CLS] token: [CLS]-scoring
methods run the "received attention" proxy (see FasterVLMConfig.score). Positions are M-RoPE (t, h, w) ids, which
carry the image's geometry: kept tokens keep the ids the stock model gives them on the full sequence, and so does
the text after them, in methods that prune inside the language model too (FastV, SparseVLM: its recycled tokens
take the ids of the visual token they follow; its contiguous renumbering would scramble the grid). Tokens made
before the LLM have no such place, so merging methods that run there (pool, VisionZip) are refused.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers.vision_utils import get_vision_window_index

from fastervlm.models.base import EncodedLayout, Modality, ModelAdapter, VisionReceived
from fastervlm.models.llava import encoder_layer_for_feature

FEATURE_LAYER = -1  # the merger reads the last block's output


# Signals the projector-input path computes and this family's select-after-encoding path does not.
UNPROVIDED = frozenset({"vision_features", "projected_features", "vision_keys", "vision_cls_features"})


class Qwen2VLAdapter(ModelAdapter):
    model_classes = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    positions = "original"
    selects_after_encoding = True
    grids = {"image": "image_grid_thw", "video": "video_grid_thw"}  # noqa: RUF012 - modality -> its grid input

    def base(self, model: nn.Module) -> nn.Module:
        return model.model

    def tower(self, model: nn.Module) -> nn.Module:
        return model.model.visual

    def modalities(self, model: nn.Module) -> list[Modality]:
        """Images, and videos: a video's frame groups (2 frames each) are its views, each with its own budget."""
        return [
            Modality("image", model.config.image_token_id, "get_image_features"),
            Modality("video", model.config.video_token_id, "get_video_features"),
        ]

    def patches_per_view(self, model: nn.Module) -> None:
        return None

    def patch_grid(self, model: nn.Module) -> None:
        return None

    def default_score(self, model: nn.Module) -> str:
        return "received"

    def check(self, model: nn.Module, needs: frozenset[str], score_layer: int | None) -> None:
        missing = needs & UNPROVIDED
        if missing:
            raise ValueError(
                f"this method needs {', '.join(sorted(missing))}, which {type(model).__name__} does not provide: its "
                "views vary in size and are selected from the encoder's merged output, where only the received "
                "attention is computed; use fastervlm, random or an in-LLM method on this model"
            )
        if "vision_cls_row" in needs:
            raise ValueError(
                f"score='cls' needs a vision [CLS] token, and {type(model).__name__}'s vision tower "
                f"({type(self.tower(model)).__name__}) has none; use score='received' (this model's default) with a "
                "method that offers it (fastervlm)"
            )
        if "vision_received" in needs:
            self.vision_received(model, "image", score_layer)

    def vision_received(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionReceived:
        blocks = self.tower(model).blocks
        layer = FEATURE_LAYER if score_layer is None else score_layer
        attention = blocks[encoder_layer_for_feature(layer, len(blocks))].attn
        merge = model.config.vision_config.spatial_merge_size
        return VisionReceived(
            attention=attention,
            qkv=attention.qkv,
            num_heads=attention.num_heads,
            scale=attention.scaling,
            apply_rope=inspect.getmodule(type(attention)).apply_rotary_pos_emb_vision,
            group=merge * merge,
        )

    def encoded_layout(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> EncodedLayout:
        """Per image, its t frame groups of (h/2) x (w/2) merged tokens; Qwen2.5-VL's tower keeps them by window."""
        grid_thw = inputs.get("grid_thw", inputs.get(self.grids[modality]))
        if grid_thw is None:
            raise ValueError(f"{self.grids[modality]} is required to prune (the stock processor returns it)")
        vision = model.config.vision_config
        merge = vision.spatial_merge_size
        items = [(int(t), (int(h) // merge, int(w) // merge)) for t, h, w in grid_thw.tolist()]
        order = None
        if getattr(vision, "window_size", None):
            order, _ = get_vision_window_index(grid_thw, merge, vision.window_size, vision.patch_size)
        return EncodedLayout(items, order)

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """Per item, its frames' merged tokens, frame after frame, each in raster order."""
        items = self.encoded_layout(model, modality, inputs).items
        return [
            (torch.arange(views * rows * cols, device=f.device), [rows * cols] * views)
            for (views, (rows, cols)), f in zip(items, pooler_output, strict=True)
        ]

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        encoded = dict(inputs.get("mm_encoder_outputs") or {})
        pixel_values = inputs.pop("pixel_values", None)
        if pixel_values is not None:
            encoded["image"] = base.get_image_features(
                pixel_values=pixel_values, image_grid_thw=inputs.get("image_grid_thw"), return_dict=True
            )
        videos = inputs.pop("pixel_values_videos", None)
        if videos is not None:
            encoded["video"] = base.get_video_features(
                pixel_values_videos=videos, video_grid_thw=inputs.get("video_grid_thw"), return_dict=True
            )
        return {**inputs, "mm_encoder_outputs": encoded} if encoded else inputs

    def full_positions(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """The stock get_rope_index on the caller's full sequence: (3, batch, L) ids."""
        if inputs.get("mm_token_type_ids") is None:
            raise ValueError(
                "mm_token_type_ids is required to prune (the stock processor returns it): the (t, h, w) positions "
                "the kept tokens keep are computed from it"
            )
        names = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        positions, _ = self.base(model).get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], **{n: inputs.get(n) for n in names if n in inputs}
        )
        return positions

    def step_positions(self, model: nn.Module, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """(3, batch, length): the real tokens counted by the mask, plus the stored rope deltas, as
        compute_3d_position_ids does for the new tokens (and (t, h, w) alike: decoded text is 1-D)."""
        count = attention_mask.long().cumsum(-1)[:, -length:] - 1
        deltas = self.base(model).rope_deltas.to(count.device)
        return (count + deltas).unsqueeze(0).expand(3, -1, -1)

    def set_rope_deltas(self, model: nn.Module, deltas: torch.Tensor) -> None:
        self.base(model).rope_deltas = deltas


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: Qwen2-VL's layout (full-attention tower, 16 px patches) plus deepstack.

    The tower also merges features at a few intermediate blocks ("deepstack"), which the language model adds to
    the visual tokens' hidden states after its first layers: they are pruned with the same kept rows, and inside
    the language model they follow the tokens each stage keeps.
    """

    model_classes = ("Qwen3VLForConditionalGeneration",)
    row_aligned_outputs = ("deepstack_features",)
    visual_injections = ("_deepstack_process",)
