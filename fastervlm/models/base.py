"""What the runtime asks of a model family; an adapter knows where things are, never what to keep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class VisionAttention:
    """The one vision self-attention whose [CLS] query row scores the patches.

    q_proj / k_proj are hooked for their outputs, so the row costs one (1 x N) product per head and
    the attention itself keeps running with whatever kernel the model was loaded with.
    """

    q_proj: nn.Module
    k_proj: nn.Module
    num_heads: int
    scale: float
    layer: nn.Module | None = None  # the encoder layer around it, whose output row 0 is the [CLS] state


@dataclass
class ImageSelection:
    """What pruning kept of one image's feature rows (the placeholder span it fills in the text).

    Attached to the per-image feature tensor, so the selection follows the features through generate's
    pre-encoding and beam expansion, which copy list entries but never rebuild them.
    """

    rows: torch.Tensor  # kept row indices into the image's feature rows, ascending
    num_rows: int  # rows before pruning: the image's placeholder tokens in the text
    views: list[torch.Tensor]  # per view (image / crop / frame): kept patch indices, raster order
    view_sizes: list[int]  # patches per view
    merged: int = 0  # tokens made by the method (VisionZip's contextual, pooling's) beyond the kept patches


SELECTION_ATTR = "_fastervlm_selection"


@dataclass(frozen=True)
class Modality:
    """One kind of visual input a model merges into its token sequence."""

    name: str  # its key in mm_encoder_outputs ("image", "video")
    token_id: int  # its placeholder token in input_ids
    encoder: str  # the base-model method that encodes it (generate() calls it before prefill)


class ModelAdapter:
    """Base for one model family. Subclasses name their classes and locate modules and inputs.

    An adapter instance is made per prune() call. Families with choices of their own (LLaVA-NeXT's `mode`,
    say) list them in `options` with their allowed values and take them as constructor keywords.
    """

    model_classes: tuple[str, ...] = ()
    supports_merging = False  # can place tokens a method makes (VisionZip's, pooling's) in the sequence
    options: dict[str, tuple[Any, ...]] = {}  # noqa: RUF012 - read-only class table

    def install(self, model: nn.Module) -> list[Callable[[], None]]:
        """Family-specific changes a mode needs (returned as undos); most families need none."""
        return []

    def base(self, model: nn.Module) -> nn.Module:
        """The module whose forward merges image features into the token sequence."""
        raise NotImplementedError

    def modalities(self, model: nn.Module) -> list[Modality]:
        raise NotImplementedError

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack (embeddings, layers, rotary embedding); the LLaVA families keep it here."""
        return model.model.language_model

    def num_llm_layers(self, model: nn.Module) -> int:
        return len(self.language_model(model).layers)

    def patches_per_view(self, model: nn.Module) -> int:
        raise NotImplementedError

    def patch_grid(self, model: nn.Module) -> tuple[int, int]:
        """(rows, cols) of one view's patches, for drawing kept patches on the image."""
        raise NotImplementedError

    def check(self, model: nn.Module, needs: frozenset[str], score_layer: int | None) -> None:
        """Raise if this model cannot provide what a method needs."""
        raise NotImplementedError

    def vision_attention(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionAttention:
        raise NotImplementedError

    def candidates(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> torch.Tensor | None:
        """(views, N) bool: the patches this encode's layout can carry to the LLM; None when every patch can.

        inputs: the encoder call's arguments by name. Called before the encoder runs.
        """
        return None

    def feature_rows(self, modality: str, kept: torch.Tensor, num_rows: int) -> torch.Tensor:
        """Projector-input rows to keep, (views, r), given kept patch indices (views, k).

        The default suits towers whose features are the patches alone (CLS cropped); a model that keeps extra
        rows per view (a CLS row, say) maps them here.
        """
        return kept

    def patch_features(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """The patch rows of projector-input (or -output) features, (views, N, dim): what methods compare.

        The default suits towers whose features are the patches alone; a model with extra rows drops them here.
        """
        return features

    def projector(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def encode(self, base: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        """Move raw pixel inputs into `mm_encoder_outputs`, as generate() does before prefill."""
        raise NotImplementedError

    def selections(
        self, modality: str, pooler_output: list[torch.Tensor] | torch.Tensor, kept: torch.Tensor
    ) -> list[ImageSelection]:
        """Map per-view kept patch indices (views, k) to feature rows: one selection per pooler_output entry.

        pooler_output is the encoder's: a list of per-image tensors, or one (views, rows, dim) tensor.
        """
        raise NotImplementedError
