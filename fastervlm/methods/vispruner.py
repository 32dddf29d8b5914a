"""VisPruner: important patches by [CLS] attention, then diverse ones among the rest (arXiv 2412.01818 v2, ICCV 2025).

FasterVLM's successor by the same author; the rule is read from Theia-4869/VisPruner and written anew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget
from fastervlm.methods.signals import ViewSignals

DROP_PER_ROUND = 8  # the reference removes at most 8 near-duplicates per matching round


@dataclass(frozen=True)
class VisPrunerConfig:
    """Keep k patches per view: int(k x important_ratio) by [CLS] attention, the rest for diversity.

    ratio / tokens: the budget k per view, as for every method before the LLM (the reference's
    `--visual_token_num` is tokens=k). important_ratio: the reference's `--important_ratio`, default 0.5.
    Diverse patches: among the patches not chosen as important, in descending attention order, rounds of
    matching drop near-duplicates until k - important remain: split them alternately into A and B, score each
    A patch by its highest cosine similarity to any B patch (projector-input features), drop the min(8, excess)
    highest-scoring A patches. Similarities in fp32; ties in either ranking fall as torch's argsort breaks them,
    as in the reference. The reference assumes an even number left each round (it fails on an odd one, as at
    ratio 0.9: 576 - 29); here A is simply the one patch larger then.
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    important_ratio: float = 0.5

    def __post_init__(self) -> None:
        Budget(self.ratio, self.tokens)
        value = self.important_ratio
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"important_ratio must be a number in [0, 1] (the share of the budget kept by [CLS] attention), "
                f"got {value!r}"
            )

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def select(config: VisPrunerConfig, views: ViewSignals) -> torch.Tensor:
    """Kept patch indices per view, (views, k), ascending."""
    scores = views.among_candidates(views.require_cls_attention("vispruner"))
    features = views.require("features", "vispruner").float()
    normed = features / features.norm(dim=-1, keepdim=True)
    k = config.budget.kept(views.num_patches)
    important = int(k * config.important_ratio)
    order = scores.argsort(dim=-1, descending=True)
    kept = []
    for view, ranked in enumerate(order):
        rest = ranked[important:]
        usable = torch.isfinite(scores[view, rest])  # a patch the layout cuts is no diverse pick either
        diverse = drop_duplicates(normed[view], rest[usable], k - important)
        filler = rest[~usable][: k - important - len(diverse)]
        kept.append(torch.cat([ranked[:important], diverse, filler]))
    return torch.stack(kept).sort(dim=-1).values


def drop_duplicates(normed: torch.Tensor, residual: torch.Tensor, count: int) -> torch.Tensor:
    """Rounds of matching between alternate residual patches until `count` remain (all, if fewer are given)."""
    while count > 0 and len(residual) > count:
        drop = min(DROP_PER_ROUND, len(residual) - count)
        a, b = residual[::2], residual[1::2]
        most_similar = (normed[a] @ normed[b].T).max(dim=-1).values
        distinct = most_similar.argsort(descending=True)[drop:]
        residual = torch.cat([a[distinct], b])
    return residual[:count]
