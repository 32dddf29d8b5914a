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
    # Per row of the image's placeholders: view * view_sizes[0] + patch, or -1 for a row that carries no patch (a
    # newline, a [CLS] row). Set for in-LLM methods, whose report maps the rows reaching the last layer to views.
    sources: torch.Tensor | None = None


SELECTION_ATTR = "_fastervlm_selection"


@dataclass(frozen=True)
class VisionReceived:
    """The vision self-attention whose maps give the "received attention" score, for towers without [CLS].

    attention is hooked for its call's segment boundaries (`cu_seqlens`: images, frames or windows) and rotary
    tables; qkv for its fused q/k/v output. apply_rope is the tower's own rotary function. group: consecutive
    rows one merged token joins (the 2 x 2 patch merger's 4).
    """

    attention: nn.Module
    qkv: nn.Module
    num_heads: int
    scale: float
    apply_rope: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    group: int


@dataclass(frozen=True)
class EncodedLayout:
    """How one encoder call's merged tokens split into items (images or videos) and views (frames).

    items[i] = (views, (rows, cols)): item i holds `views` views of a rows x cols merged grid each, in raster order.
    order: (groups,) the raster index of each merged row in the order the tower keeps them (Qwen2.5-VL's windows);
    None when the tower keeps raster order.
    extra: rows each item's features hold after its views, always kept (LLaVA-OneVision's newline ending a video).
    """

    items: list[tuple[int, tuple[int, int]]]
    order: torch.Tensor | None = None
    extra: int = 0


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
    # Where kept tokens sit: "contiguous" renumbers them in the shorter sequence (LLaVA, as in the reference);
    # "original" keeps the position ids the stock model gives them in the full sequence (M-RoPE: Qwen2-VL's
    # (t, h, w) ids carry the image's geometry, which renumbering would destroy).
    positions = "contiguous"
    # Pick kept tokens per item from the encoder's output (`encoded_layout`) rather than at the projector's input:
    # for towers whose views vary in size and whose projector sees one flat sequence of every image's patches.
    selects_after_encoding = False
    # Encoder-output fields besides pooler_output that hold one row per visual token, as lists of per-layer
    # pooler_output-shaped features (Qwen3-VL's deepstack_features): pruned with the same kept rows.
    row_aligned_outputs: tuple[str, ...] = ()
    # Language-model methods (hidden, visual_pos_masks, visual_embeds) -> hidden that add per-visual-token features
    # between decoder layers (Qwen3-VL's _deepstack_process): in-LLM stages make them follow the kept tokens.
    visual_injections: tuple[str, ...] = ()
    supports_merging = False  # can place tokens a method makes (VisionZip's, pooling's) in the sequence
    options: dict[str, tuple[Any, ...]] = {}  # noqa: RUF012 - read-only class table

    def install(self, model: nn.Module) -> list[Callable[[], None]]:
        """Family-specific changes a mode needs (returned as undos); most families need none."""
        return []

    @classmethod
    def input_processor(cls, processor: Any, **options: Any) -> Any:
        """The processor whose inputs the family's `options` need (the lmms-eval model builds its batches with it):
        the stock one, unless an option changes the placeholder layout (LLaVA-NeXT's mode="paper")."""
        return processor

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

    def patches_per_view(self, model: nn.Module) -> int | None:
        """Patches of every view; None where it depends on the image (dynamic resolution)."""
        raise NotImplementedError

    def patch_grid(self, model: nn.Module) -> tuple[int, int] | None:
        """(rows, cols) of one view's patches, for drawing kept patches on the image; None if it varies."""
        raise NotImplementedError

    def default_score(self, model: nn.Module) -> str:
        """The patch score a [CLS]-scoring method runs when not told: "cls", or "received" without a [CLS]."""
        return "cls"

    def vision_received(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionReceived:
        raise ValueError(
            f"score='received' is implemented for vision towers without a [CLS] token; {type(model).__name__}'s "
            "has one: use score='cls'"
        )

    def after_encoding(self, modality: str) -> bool:
        """Whether this modality's tokens are picked from the encoder's output (`encoded_layout`), not at the
        projector's input: views of varying size, or features the model pools after the projector."""
        return self.selects_after_encoding

    def encoded_layout(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> EncodedLayout:
        """For modalities picked after encoding: the items and views of one encoder call (its arguments by name)."""
        raise NotImplementedError

    def merged_scores(self, model: nn.Module, modality: str, scores: torch.Tensor) -> torch.Tensor:
        """The probe's scores as one score per encoder output row (views in order), for modalities picked after
        encoding; the default takes them as they are."""
        return scores

    def full_positions(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """For positions="original", when the caller passed none: the stock (rows, batch, L) position ids of the
        full sequence (generate passes its own, computed by the model before it pre-encodes the images)."""
        raise NotImplementedError

    def step_positions(self, model: nn.Module, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """For positions="original": the ids of a cached step's `length` new tokens, by the model's own rule."""
        raise NotImplementedError

    def set_rope_deltas(self, model: nn.Module, deltas: torch.Tensor) -> None:
        """For positions="original": store the (batch, 1) deltas a stock decode step without position ids adds to
        the attention mask's running count."""
        raise NotImplementedError

    def check(self, model: nn.Module, needs: frozenset[str], score_layer: int | None) -> None:
        """Raise if this model cannot provide what a method needs."""
        raise NotImplementedError

    def vision_attention(self, model: nn.Module, modality: str, score_layer: int | None) -> VisionAttention:
        raise NotImplementedError

    def unused_vision_layers(self, model: nn.Module, modality: str, score_layer: int | None) -> list[nn.Module]:
        """The vision encoder layers after both the feature layer and the scored layer, which no output needs.

        The runtime skips them while the modality's encoder runs; empty (the default) when every layer counts.
        """
        return []

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

    def items(self, model: nn.Module, modality: str, inputs: dict[str, Any]) -> list[tuple[int, int]]:
        """(views, placeholder rows) of each image or video one encoder call encodes, in order.

        inputs: the encoder call's arguments by name. Lets the runtime tell which sample each view belongs to.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot tell which sample a view belongs to")

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

    def row_sources(
        self, model: nn.Module, modality: str, inputs: dict[str, Any], pooler_output: list[torch.Tensor] | torch.Tensor
    ) -> list[tuple[torch.Tensor, list[int]]]:
        """Where each feature row comes from, per pooler_output entry (the placeholder span it fills).

        (sources, view_sizes): sources (rows,) holds view * view_sizes[0] + patch for a patch row, -1 for any other
        (a newline, a [CLS] row); view_sizes the patches of each view (all equal). inputs: the encoder call's
        arguments by name. Lets in-LLM methods report, per view, the patches that reach the last layer.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot map its feature rows to views")

    def selections(
        self, modality: str, pooler_output: list[torch.Tensor] | torch.Tensor, kept: torch.Tensor
    ) -> list[ImageSelection]:
        """Map per-view kept patch indices (views, k) to feature rows: one selection per pooler_output entry.

        pooler_output is the encoder's: a list of per-image tensors, or one (views, rows, dim) tensor.
        """
        raise NotImplementedError
