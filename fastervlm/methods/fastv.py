"""FastV: rank image tokens by the attention they get inside the LLM at layer K-1 (arXiv 2403.06764)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, normalize_budget, whole_number
from fastervlm.methods.signals import LlmSignals, LlmStages

SCORES = ("last", "text_mean")
POSITIONS = ("original", "contiguous")


@dataclass(frozen=True)
class FastVConfig:
    """Prune image tokens inside the language model, once, at prefill.

    layer (K): layers < K see every token; from layer K on only the kept image tokens remain (K=2 in the paper).
    score: "last" ranks by the last token's attention (the reference code); "text_mean" by the mean over the
    text queries that follow the first image token (the paper's wording).
    positions: "original" keeps each token's position id (reference behaviour); "contiguous" renumbers.
    ratio / tokens: image tokens of a sample removed (fraction) or kept (count), all its images together; a sample
    with fewer than `tokens` image tokens (a text-only one, say) keeps all it has.
    """

    ratio: float | None = 0.5
    tokens: int | None = None
    layer: int = 2
    score: str = "last"
    positions: str = "original"

    def __post_init__(self) -> None:
        normalize_budget(self)
        Budget(self.ratio, self.tokens)
        layer = whole_number("layer", self.layer, "layers before it see every token")
        if layer < 1:
            raise ValueError(f"layer must be an int >= 1 (layers before it see every token), got {self.layer!r}")
        object.__setattr__(self, "layer", layer)
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)

    def stages(self, num_layers: int) -> LlmStages:
        """One stage at layer K, checked against the language model's depth."""
        if not self.layer < num_layers:
            raise ValueError(
                f"layer must be in [1, {num_layers - 1}] for this {num_layers}-layer language model, got {self.layer}"
            )
        queries = "last" if self.score == "last" else "text"
        return LlmStages((self.layer,), queries=queries, contiguous=self.positions == "contiguous")


def select(config: FastVConfig, signals: LlmSignals) -> list[torch.Tensor]:
    """Per sample: indices into its image tokens, ascending, of the top-k by attention received."""
    kept = []
    for scores in signals.image_attention:
        k = config.budget.kept_at_most(scores.numel())
        kept.append(scores.topk(k).indices.sort().values)
    return kept
