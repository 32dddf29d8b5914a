"""What the runtime hands a method: the signals it declared it needs, for a batch of views."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ViewSignals:
    """A batch of views (images, crops or frames) that share one patch count.

    Each field is None unless the method declared the need named beside it:
    cls_attention ("vision_cls_row"): (views, N) post-softmax [CLS] attention at the scoring layer, heads averaged.
    received_attention ("vision_received"): (views, N) the attention each token receives at the scoring layer, for
    towers without [CLS]: post-softmax, averaged over the queries that may see it (its image, frame or window) and
    the heads, then over the patches one merged token joins.
    features ("vision_features"): (views, N, dim) the patches the projector would see.
    keys ("vision_keys"): (views, 1 + N, head_dim) keys at the scoring layer averaged over heads, [CLS] first.
    cls_features ("vision_cls_features"): (views, dim) the [CLS] token's hidden state at the feature layer.
    projected ("projected_features"): (views, N, llm_dim) the projector's output for every patch, i.e. the language
    model's input embeddings of all visual tokens (the projector then runs on every patch, not only the kept ones).
    instructions ("instruction"): per view, the text of its sample's instruction (after its last visual placeholder).
    candidates: (views, N) bool, the patches the model's layout can carry to the LLM (LLaVA-NeXT's unpadding cuts
    some crop patches); None when all can. A method picks among them first, so a view keeps k that arrive.
    """

    num_patches: int
    num_views: int = 1
    grid: tuple[int, int] = (0, 0)
    cls_attention: torch.Tensor | None = None
    received_attention: torch.Tensor | None = None
    features: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    cls_features: torch.Tensor | None = None
    projected: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    instructions: list[str] | None = None

    def among_candidates(self, priority: torch.Tensor) -> torch.Tensor:
        """Priorities with the patches the layout would cut pushed below every candidate."""
        if self.candidates is None:
            return priority
        return priority.float().masked_fill(~self.candidates.to(priority.device), float("-inf"))

    def require_cls_attention(self, method: str) -> torch.Tensor:
        return self.require("cls_attention", method)

    def require(self, name: str, method: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"method {method!r} needs the signal {name!r}, which was not computed")
        return value


@dataclass(frozen=True)
class Merged:
    """A selection that also makes new tokens: `tokens` replace the N patches as the projector's input.

    kept: (views, k) patch indices carried over unchanged (for the report); tokens: (views, r, dim), r >= k,
    in the order the LLM will see them.
    """

    kept: torch.Tensor
    tokens: torch.Tensor


QUERIES = ("last", "text", "visual_text")
SCORES = ("previous", "own")
HEADS = ("mean", "max")


@dataclass(frozen=True)
class LlmStages:
    """Where an in-LLM method prunes, resolved against one language model by the method's config.

    layers: decoder layers whose input is shortened, ascending.
    score: which q/k the stage at layer K scores with: "previous", the q/k layer K-1 computed (FastV, SparseVLM);
    "own", layer K's input norm and q/k projections applied to its input before it is shortened (PyramidDrop).
    queries: the rows that score, "last" (the sample's last real token), "text" (its real non-visual tokens after
    the first visual token; the last real token if there are none) or "visual_text" (its visual tokens and those
    text rows). heads: how attention over heads is reduced, "mean" or "max".
    contiguous: renumber positions in the shorter sequence, or keep each token's position id (a made token takes
    its anchor's).
    """

    layers: tuple[int, ...]
    queries: str = "last"
    contiguous: bool = False
    score: str = "previous"
    heads: str = "mean"

    def __post_init__(self) -> None:
        for name, allowed in (("queries", QUERIES), ("score", SCORES), ("heads", HEADS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class LlmSignals:
    """What an in-LLM method sees at one stage, per sample (samples hold different image counts).

    A sample's visual tokens are its image tokens still in the sequence plus tokens earlier stages made, in
    sequence order; its query rows are the ones LlmStages.queries names, in sequence order. stage: index into
    LlmStages.layers. num_layers: the language model's decoder layers. image_tokens[b]: image tokens sample b
    entered the language model with.
    visual_index[b] / query_index[b]: (n_visual_b,) / (q_b,) each token's index in the sample's unpadded prefill
    sequence (-1 for made tokens).
    query_is_visual[b]: (q_b,) bool, which query rows are visual tokens.
    query_attention[b] ("llm_query_row"): (q_b, n_visual_b) attention each query row pays the visual tokens,
    post-softmax over all real keys it may see, reduced over heads as LlmStages.heads says.
    visual_states[b] ("llm_visual_states"): (n_visual_b, dim) hidden states of the visual tokens entering layer K.
    image_embeds[b] / query_embeds[b] ("llm_input_embeds"): (n_image_b, dim) / (q_b, dim) the language model's
    input embeddings of the sample's image tokens and of its query rows (text rows never change across stages).
    visual_keys[b] / query_keys[b] ("llm_keys"): (n_visual_b, kv_heads * head_dim) / (q_b, ...) the scoring keys,
    rotary embedding applied, heads concatenated.
    visual_normed[b] / query_normed[b] ("llm_normed_states"): the hidden states entering layer K passed through the
    language model's final norm, as its head would see them.
    """

    stage: int
    num_layers: int = 0
    image_tokens: list[int] = field(default_factory=list)
    visual_index: list[torch.Tensor] = field(default_factory=list)
    query_index: list[torch.Tensor] = field(default_factory=list)
    query_is_visual: list[torch.Tensor] = field(default_factory=list)
    query_attention: list[torch.Tensor] | None = None
    visual_states: list[torch.Tensor] | None = None
    image_embeds: list[torch.Tensor] | None = None
    query_embeds: list[torch.Tensor] | None = None
    visual_keys: list[torch.Tensor] | None = None
    query_keys: list[torch.Tensor] | None = None
    visual_normed: list[torch.Tensor] | None = None
    query_normed: list[torch.Tensor] | None = None

    @property
    def image_attention(self) -> list[torch.Tensor]:
        """(n_visual_b,) attention received, averaged over the query rows too."""
        return [rows.mean(dim=0) for rows in self.query_attention]


@dataclass(frozen=True)
class LlmMerged:
    """An in-LLM selection that also makes tokens, for one sample.

    kept: (k,) indices into the sample's visual tokens, which stay where they are; tokens: (r, dim) new visual
    tokens, inserted right after the sample's last visual token (kept or not), in this order.
    """

    kept: torch.Tensor
    tokens: torch.Tensor
