"""DivPrune: the most diverse visual tokens by greedy max-min selection (CVPR 2025, arXiv 2503.02175).

The rule is read from vbdi/divprune (`DivPrune` in LLaVA/llava/model/llava_arch.py) and written anew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget
from fastervlm.methods.signals import ViewSignals

REFERENCE_KEPT_FRACTION = 0.098  # the reference's SUBSET_RATIO (run_Divprune.sh), the share of tokens it keeps


@dataclass(frozen=True)
class DivPruneConfig:
    """Keep the k visual tokens of a view that are farthest apart in cosine distance, chosen greedily.

    The reference's knob `SUBSET_RATIO` is the fraction kept, round(SUBSET_RATIO x N) tokens; here ratio =
    1 - SUBSET_RATIO gives the same count, and the default is the reference's 0.098 (576 -> 56 tokens).
    Distances are 1 - cosine similarity of the projected tokens (the LLM's input embeddings, as the reference takes
    them from the embedded sequence), in fp32. The first pick is the token whose nearest other token is farthest;
    each next pick maximises its distance to the nearest token already picked. The reference selects over one
    image's whole sequence (on LLaVA-NeXT its views and newline tokens together); here the budget is per view,
    as for every method before the LLM.
    """

    ratio: float | None = 1 - REFERENCE_KEPT_FRACTION
    tokens: int | None = None

    def __post_init__(self) -> None:
        Budget(self.ratio, self.tokens)

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def select(config: DivPruneConfig, views: ViewSignals) -> torch.Tensor:
    """Kept patch indices per view, (views, k), ascending (the reference sorts the picks back into order)."""
    projected = views.require("projected", "divprune").float()
    normed = projected / projected.norm(dim=-1, keepdim=True)
    distance = 1.0 - normed @ normed.transpose(1, 2)
    k = config.budget.kept(views.num_patches)
    usable = views.candidates if views.candidates is not None else torch.ones(distance.shape[:2], dtype=torch.bool)
    usable = usable.to(distance.device)
    return torch.stack([max_min_picks(d, k, u) for d, u in zip(distance, usable, strict=True)]).sort(dim=-1).values


def max_min_picks(distance: torch.Tensor, k: int, usable: torch.Tensor) -> torch.Tensor:
    """Greedy max-min diversity over one view's (N, N) distances: k distinct indices, in pick order.

    Patches the layout cuts (usable False) are nobody's neighbour and are picked only once every usable one is.
    A picked token is never picked again (the reference can re-pick one when every other token duplicates a picked
    one exactly, and then keeps fewer than k).
    """
    picks = torch.empty(k, dtype=torch.long, device=distance.device)
    chosen = torch.zeros_like(usable)
    # First pick: the token whose nearest other token is farthest (row 0 of the two smallest is its own 0).
    score = distance.masked_fill(~usable.unsqueeze(1), float("inf")).topk(2, dim=0, largest=False).values[1]
    nearest = None
    for i in range(k):
        score = score.masked_fill(~usable, -1.0).masked_fill(chosen, float("-inf"))
        picks[i] = score.argmax()
        chosen[picks[i]] = True
        nearest = distance[picks[i]] if nearest is None else torch.minimum(nearest, distance[picks[i]])
        score = nearest
    return picks
