"""Random patches: the control every pruning method should beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget
from fastervlm.methods.signals import ViewSignals


@dataclass(frozen=True)
class RandomConfig:
    """Keep k patches drawn uniformly without replacement.

    seed fixes the subset: every view gets the same positions, so results do not depend on batching or on
    the order of a dataset; average over several seeds to estimate the control's spread.
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        Budget(self.ratio, self.tokens)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def select(config: RandomConfig, views: ViewSignals) -> torch.Tensor:
    k = config.budget.kept(views.num_patches)
    generator = torch.Generator().manual_seed(config.seed)
    kept = torch.randperm(views.num_patches, generator=generator)[:k].sort().values
    return kept.expand(views.num_views, k).clone()
