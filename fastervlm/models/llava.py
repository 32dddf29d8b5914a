"""LLaVA-1.5 (`LlavaForConditionalGeneration`): one 24 x 24 CLIP view per image, CLS cropped."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastervlm.models.base import ImageSelection, Modality, ModelAdapter, VisionAttention


def encoder_layer_for_feature(feature_layer: int, num_layers: int) -> int:
    """The encoder layer whose output is hidden_states[feature_layer].

    hidden_states holds the embeddings then each layer's output, so index f >= 1 is layer f - 1 and a
    negative f is layer num_layers + f; -2 gives the penultimate layer, as attentions[-2] does in the
    reference implementation.
    """
    index = feature_layer + num_layers if feature_layer < 0 else feature_layer - 1
    if not 0 <= index < num_layers:
        raise ValueError(
            f"score_layer must select an encoder layer's output: -{num_layers}..-1 or 1..{num_layers}, "
            f"got {feature_layer} (0 is the patch embeddings, which have no attention)"
        )
    return index


class LlavaAdapter(ModelAdapter):
    model_classes = ("LlavaForConditionalGeneration",)
    supports_merging = True
    towers: dict[str, str] = {"image": "vision_tower"}  # noqa: RUF012 - modality -> base-model tower attribute

    def base(self, model: nn.Module) -> nn.Module:
        return model.model

    def modalities(self, model: nn.Module) -> list[Modality]:
        return [Modality("image", model.config.image_token_id, "get_image_features")]

    def patch_grid(self, model: nn.Module) -> tuple[int, int]:
        vision = model.config.vision_config
        side = vision.image_size // vision.patch_size
        return side, side

    def patches_per_view(self, model: nn.Module) -> int:
        rows, cols = self.patch_grid(model)
        return rows * cols

    def check(self, model: nn.Module, needs: frozenset[str], score_layer: int | None) -> None:
        config = model.config
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                "vision_feature_select_strategy must be 'default' (CLS cropped, patches only) for pruning, "
                f"got {config.vision_feature_select_strategy!r}"
            )
        if not isinstance(config.vision_feature_layer, int):
            raise ValueError(
                f"vision_feature_layer must be a single int for pruning, got {config.vision_feature_layer!r}"
            )
        if "vision_cls_row" in needs:
            for modality, name in self.towers.items():
                tower = getattr(model.model, name)
                if type(tower).__name__ != "CLIPVisionModel":
                    raise ValueError(
                        f"this method scores patches by the vision [CLS] token, and the {name} "
                        f"({type(tower).__name__}) has no [CLS] token; supported vision towers: CLIPVisionModel"
                    )
                self.vision_attention(model, modality, score_layer)

    def vision_attention(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionAttention:
        """The scored attention of this modality's tower (Video-LLaVA's images and videos have separate weights)."""
        layers = getattr(model.model, self.towers[modality]).encoder.layers  # transformers >= 5.x: no .vision_model
        feature_layer = model.config.vision_feature_layer if score_layer is None else score_layer
        layer = layers[encoder_layer_for_feature(feature_layer, len(layers))]
        attention = layer.self_attn
        return VisionAttention(attention.q_proj, attention.k_proj, attention.num_heads, attention.scale, layer)

    def unused_vision_layers(self, model: nn.Module, modality: str, score_layer: int | None) -> list[nn.Module]:
        layers = getattr(model.model, self.towers[modality]).encoder.layers
        needed = encoder_layer_for_feature(model.config.vision_feature_layer, len(layers))
        if score_layer is not None:
            needed = max(needed, encoder_layer_for_feature(score_layer, len(layers)))
        return list(layers[needed + 1 :])

    def items(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """One view per image, its patches as placeholders."""
        return [(1, self.patches_per_view(model))] * len(inputs["pixel_values"])

    def projector(self, model: nn.Module) -> nn.Module:
        return model.model.multi_modal_projector

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        pixel_values = inputs.pop("pixel_values", None)
        if pixel_values is None:
            return inputs
        image = base.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=inputs.pop("vision_feature_layer", None),
            vision_feature_select_strategy=inputs.pop("vision_feature_select_strategy", None),
            image_sizes=inputs.pop("image_sizes", None),
            return_dict=True,
        )
        return {**inputs, "mm_encoder_outputs": {**(inputs.get("mm_encoder_outputs") or {}), "image": image}}

    def selections(self, modality: str, pooler_output: list[torch.Tensor], kept: torch.Tensor) -> list[ImageSelection]:
        if len(pooler_output) != kept.shape[0]:
            raise RuntimeError(
                f"expected one feature tensor per view, got {len(pooler_output)} for {kept.shape[0]} views"
            )
        return [
            ImageSelection(rows=k, num_rows=len(f), views=[k], view_sizes=[len(f)])
            for f, k in zip(pooler_output, kept, strict=True)
        ]

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """One view per image, its rows its patches in raster order."""
        return [(torch.arange(len(f), device=f.device), [len(f)]) for f in pooler_output]

    def merged_selections(
        self, modality: str, pooler_output: list[torch.Tensor], kept: torch.Tensor, num_tokens: int
    ) -> list[ImageSelection]:
        rows = torch.arange(num_tokens, device=kept.device)
        return [
            ImageSelection(rows=rows, num_rows=len(f), views=[k], view_sizes=[len(f)], merged=num_tokens - len(k))
            for f, k in zip(pooler_output, kept, strict=True)
        ]
