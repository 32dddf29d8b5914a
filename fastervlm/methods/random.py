"""Random patches: the control every pruning method should beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, normalize_budget, whole_number
from fastervlm.methods.signals import ViewSignals


@dataclass(frozen=True)
class RandomConfig:
    """Keep k patches drawn uniformly without replacement: the top k of seeded uniform priorities.

    seed fixes the priorities: every view gets the same positions (among those its layout can carry), so results
    do not depend on batching or on the order of a dataset; average over several seeds for the control's spread.
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        normalize_budget(self)
        Budget(self.ratio, self.tokens)
        seed = whole_number("seed", self.seed, "seeds the patch priorities")
        if not -(2**63) <= seed < 2**64:
            raise ValueError(f"seed must be in [-2**63, 2**64) (what torch.Generator.manual_seed takes), got {seed}")
        object.__setattr__(self, "seed", seed)

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def select(config: RandomConfig, views: ViewSignals) -> torch.Tensor:
    k = config.budget.kept(views.num_patches)
    priority = torch.rand(views.num_patches, generator=torch.Generator().manual_seed(config.seed))
    priority = views.among_candidates(priority.expand(views.num_views, -1))
    return priority.topk(k, dim=-1).indices.sort(dim=-1).values
