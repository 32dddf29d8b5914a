"""2-D average pooling of the patch grid: the spatial-downsampling control."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastervlm.budget import Budget, normalize_budget
from fastervlm.methods.signals import Merged, ViewSignals

MAX_ASPECT = 2


@dataclass(frozen=True)
class PoolConfig:
    """Average-pool each view's patch features (the projector's input) to an h x w grid.

    The grid is the largest h x w <= the budget k with h <= w <= 2h (so 576 -> 24x24, 288 -> 16x18,
    144 -> 12x12, 58 -> 7x8 = 56 tokens); the report gives the count actually kept.
    """

    ratio: float | None = 0.9
    tokens: int | None = None

    def __post_init__(self) -> None:
        normalize_budget(self)
        Budget(self.ratio, self.tokens)

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


def pooled_grid(k: int, grid: tuple[int, int]) -> tuple[int, int]:
    """Largest h x w within budget k and the view's own grid; of equal sizes, the squarest (288 -> 16x18)."""
    candidates = [(h, min(grid[1], k // h, MAX_ASPECT * h)) for h in range(1, grid[0] + 1)]
    candidates = [(h, w) for h, w in candidates if w >= h]
    return max(candidates, key=lambda hw: (hw[0] * hw[1], hw[0] - hw[1]), default=(0, 0))


def select(config: PoolConfig, views: ViewSignals) -> Merged:
    features = views.require("features", "pool")
    rows, cols = views.grid
    h, w = pooled_grid(config.budget.kept(views.num_patches), views.grid)
    if (h, w) == (rows, cols):  # every patch kept as it is: the stock model, reported as such (nothing merged)
        every = torch.arange(views.num_patches, device=features.device).expand(features.shape[0], -1)
        return Merged(kept=every, tokens=features)
    image = features.transpose(1, 2).reshape(features.shape[0], features.shape[2], rows, cols)
    pooled = F.adaptive_avg_pool2d(image.float(), (h, w)).to(features.dtype) if h else image[..., :0, :0]
    tokens = pooled.flatten(2).transpose(1, 2)
    return Merged(kept=torch.zeros(features.shape[0], 0, dtype=torch.long, device=features.device), tokens=tokens)
