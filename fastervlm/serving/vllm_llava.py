"""LLaVA-1.5 in vLLM with visual tokens pruned before the language model (needs vLLM; see vllm_plugin.py).

Selected with `--hf-overrides '{"architectures": ["FasterVLMLlavaForConditionalGeneration"],
"fastervlm": {"method": "fastervlm", "ratio": 0.9}}'`. Subclasses of vLLM's own LLaVA classes, registered under
that new name: vLLM's classes are left as they are.
- The processing info says each image takes the method's k placeholders (ServingPlan), so the prompt, the KV
  cache and the encoder budget are laid out for k tokens, not 576.
- The image path runs vLLM's CLIP tower (built up to the feature layer, whose attention is the scoring layer),
  reads the [CLS] query row there from a forward hook on that layer's fused qkv projection (one instance, no
  second attention pass), lets the method select, and runs the projector on the kept tokens only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import tensor_model_parallel_all_reduce
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.llava import (
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaImageInputs,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from fastervlm.methods import METHODS
from fastervlm.methods.signals import Merged, ViewSignals
from fastervlm.runtime.probe import cls_attention_row
from fastervlm.serving.plan import ServingPlan, select_views

VISION_PREFIXES = ("model.vision_tower.", "vision_tower.")  # transformers >= 4.52 / as 5.19 and 5.23 save
VISION_MODEL = "vision_model."


class FasterVLMLlavaProcessingInfo(LlavaProcessingInfo):
    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        """The method's k per image instead of the tower's N patches."""
        patches = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        side = self.get_vision_encoder_info().get_patch_grid_length()
        return ServingPlan.from_hf_config(self.get_hf_config()).tokens_per_view(patches, (side, side))


class ClsRowHook:
    """Reads the scoring layer's fused q/k/v output while armed: the [CLS] row, keys averaged over heads.

    Under tensor parallelism each rank holds num_heads / tp heads; the head means are summed across ranks.
    """

    def __init__(self, attention: nn.Module) -> None:
        self.attention = attention
        self.armed, self.cls_row, self.keys = False, None, None
        self.handle = attention.qkv_proj.register_forward_hook(self._on_qkv)

    def _on_qkv(self, module: nn.Module, args: tuple, output: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        if not self.armed:
            return
        a = self.attention
        query, keys, _ = output[0].chunk(3, dim=-1)
        local_heads = a.num_heads_per_partition
        row = cls_attention_row(query[:, 0], keys, local_heads, a.scale) * local_heads
        mean_keys = keys.float().unflatten(-1, (local_heads, -1)).sum(dim=2)
        if a.tp_size > 1:
            row, mean_keys = tensor_model_parallel_all_reduce(row), tensor_model_parallel_all_reduce(mean_keys)
        self.cls_row, self.keys = row / a.num_heads, mean_keys / a.num_heads


@MULTIMODAL_REGISTRY.register_processor(
    LlavaMultiModalProcessor, info=FasterVLMLlavaProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class FasterVLMLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LLaVA whose images reach the projector and the LLM as the method's kept tokens only."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.plan = ServingPlan.from_hf_config(self.config)
        if not isinstance(self.vision_tower, CLIPVisionModel):
            raise ValueError(
                f"FasterVLM serving supports LLaVA with a CLIP vision tower, got {type(self.vision_tower).__name__}"
            )
        if self.config.vision_feature_select_strategy != "default" or not isinstance(
            self.config.vision_feature_layer, int
        ):
            raise ValueError(
                "FasterVLM serving needs vision_feature_select_strategy='default' and one int vision_feature_layer, "
                f"got {self.config.vision_feature_select_strategy!r} and {self.config.vision_feature_layer!r}"
            )
        score_layer = getattr(self.plan.config, "score_layer", None)
        if score_layer not in (None, self.config.vision_feature_layer):
            raise ValueError(
                f"score_layer must be None or the feature layer {self.config.vision_feature_layer} when serving "
                f"(vLLM builds the tower only up to it), got {score_layer}"
            )
        if getattr(self.plan.config, "score", None) not in (None, "cls"):
            raise ValueError(f"score must be 'cls' for LLaVA's CLIP tower, got {self.plan.config.score!r}")
        encoder = self.vision_tower.vision_model.encoder
        self.cls_hook = ClsRowHook(encoder.layers[-1].self_attn)
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        self.grid = (side, side)
        self.last_kept: list[list[int]] = []  # per image of the last encoder batch, for tests and debugging

    def _process_image_input(self, image_input: LlavaImageInputs) -> torch.Tensor:
        if image_input["type"] != "pixel_values":
            raise ValueError(
                f"a pruned server takes images as pixels, got {image_input['type']!r}: "
                "precomputed embeddings carry no [CLS] attention to select with"
            )
        pixels = image_input["pixel_values"]
        if isinstance(pixels, (list, tuple)):
            pixels = torch.stack(list(pixels))
        self.cls_hook.armed = True
        try:
            hidden = self.vision_tower(pixels, feature_select_strategy="full")
        finally:
            self.cls_hook.armed = False
        features = hidden[:, 1:]
        needs = METHODS[self.plan.method].needs
        signals = ViewSignals(
            num_patches=features.shape[1],
            num_views=features.shape[0],
            grid=self.grid,
            cls_attention=self.cls_hook.cls_row,
            features=features,
            keys=self.cls_hook.keys,
            cls_features=hidden[:, 0],
            projected=self.multi_modal_projector(features) if "projected_features" in needs else None,
        )
        selected = select_views(self.plan.config, signals)
        if isinstance(selected, Merged):
            kept, tokens = selected.kept, selected.tokens
        else:
            kept = selected
            tokens = features.gather(1, kept.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        self.last_kept = kept.tolist()
        return self.multi_modal_projector(tokens)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Accept checkpoints saved by transformers >= 5.10 too, whose vision tower has no `vision_model.` level
        (vLLM 0.32's LLaVA loader expects it, as the Hub's llava-hf checkpoints have it)."""

        def with_vision_model(named: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in named:
                prefix = next((p for p in VISION_PREFIXES if name.startswith(p)), None)
                if prefix is not None and not name.startswith(prefix + VISION_MODEL):
                    name = prefix + VISION_MODEL + name[len(prefix) :]
                yield name, tensor

        return super().load_weights(with_vision_model(weights))
