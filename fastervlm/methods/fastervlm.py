"""FasterVLM: keep the patches the vision encoder's [CLS] token attends to most (arXiv 2412.01818)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, normalize_budget, whole_number
from fastervlm.methods.signals import ViewSignals

SCORES = (None, "cls", "received")


@dataclass(frozen=True)
class FasterVLMConfig:
    """[CLS]-attention pruning before the language model.

    ratio: fraction of visual tokens removed per view (the paper's convention); or tokens: kept per view.
    score_layer: vision layer whose [CLS] row scores the patches; None means the model's
    `vision_feature_layer` (-2 for LLaVA), which is what the paper does: scoring any other layer breaks parity;
    on towers that feed the last layer (Qwen2-VL's), that layer (-1).
    score: "cls" (the paper's [CLS] row) or "received", the proxy for towers without a [CLS] token (Qwen2-VL's,
    SigLIP's): the attention each patch receives at that layer, averaged over the queries and heads that may see it
    (within its window for windowed blocks) and over the patches one merged token joins. None means the model's
    own: "cls" where the tower has a [CLS] token; prune() records the one that ran.
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    score_layer: int | None = None
    score: str | None = None

    def __post_init__(self) -> None:
        normalize_budget(self)
        Budget(self.ratio, self.tokens)
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}, got {self.score!r}")
        if self.score_layer is not None:
            layer = whole_number("score_layer", self.score_layer, "a hidden-state index like -2, or None")
            object.__setattr__(self, "score_layer", layer)

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def select(config: FasterVLMConfig, views: ViewSignals) -> torch.Tensor:
    """Kept patch indices per view, (views, k), ascending: the LLM was trained on raster order."""
    if config.score == "received":
        scores = views.among_candidates(views.require("received_attention", "fastervlm"))
    else:
        scores = views.among_candidates(views.require_cls_attention("fastervlm"))
    k = config.budget.kept(views.num_patches)
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values
