"""VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity (arXiv 2412.04467)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, check_count, normalize_budget
from fastervlm.methods.signals import Merged, ViewSignals

DOMINANT_SHARE = 27 / 32  # the reference splits: 64 = 54 + 10, 128 = 108 + 20, 192 = 162 + 30


@dataclass(frozen=True)
class VisionZipConfig:
    """Keep the [CLS] token and the patches it attends to most, then merge the rest into a few tokens.

    For a budget k (per view): dominant = round(27/32 k) tokens, [CLS] among them, and k - dominant contextual
    tokens, the reference's 54+10 / 108+20 / 162+30 extended to any k. `dominant` / `contextual` override it.
    A budget of every patch (ratio=0, tokens=N) keeps every patch as it is and merges nothing: the stock model.
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    dominant: int | None = None
    contextual: int | None = None

    def __post_init__(self) -> None:
        normalize_budget(self)
        Budget(self.ratio, self.tokens)
        if (self.dominant is None) != (self.contextual is None):
            raise ValueError("give both dominant and contextual, or neither (then the budget splits 27:5)")
        for name in ("dominant", "contextual"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_count(name, getattr(self, name), "tokens per view"))
        if self.dominant == 0:
            raise ValueError("dominant must be >= 1: the [CLS] token is always among the dominant tokens")

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)

    def check_fits(self, num_patches: int) -> None:
        """Refuse, at prune() time, more tokens than a view has placeholders: the made tokens ([CLS] among the
        dominant ones, the contextual ones) take the view's placeholder slots, N of them."""
        self.budget.check_fits(num_patches)
        if self.dominant is not None and self.dominant + self.contextual > num_patches:
            raise ValueError(
                f"dominant + contextual must be <= {num_patches} (the placeholder tokens per view of this model), "
                f"got dominant={self.dominant}, contextual={self.contextual}"
            )

    def split(self, num_patches: int) -> tuple[int, int]:
        if self.dominant is not None:
            return self.dominant, self.contextual
        k = self.budget.kept(num_patches)
        dominant = round(DOMINANT_SHARE * k)
        return dominant, k - dominant


def select(config: VisionZipConfig, views: ViewSignals) -> Merged:
    scores = views.require_cls_attention("visionzip")
    features = views.require("features", "visionzip")
    keys = views.require("keys", "visionzip")[:, 1:]
    cls = views.require("cls_features", "visionzip")
    if config.dominant is None and config.budget.kept(views.num_patches) == views.num_patches:
        return Merged(kept=stock_rows(features), tokens=features)
    dominant, contextual = config.split(views.num_patches)
    if dominant == 0:  # an empty budget: nothing, not even [CLS]
        return Merged(kept=scores.new_zeros(scores.shape[0], 0, dtype=torch.long), tokens=features[:, :0])
    kept = scores.topk(min(dominant - 1, views.num_patches), dim=-1).indices.sort(dim=-1).values
    tokens = [cls.unsqueeze(1), features.gather(1, kept.unsqueeze(-1).expand(-1, -1, features.shape[-1]))]
    if contextual:
        tokens.append(torch.stack([merge(f, k, m, contextual) for f, k, m in zip(features, keys, kept, strict=True)]))
    return Merged(kept=kept, tokens=torch.cat(tokens, dim=1))


def merge(features: torch.Tensor, keys: torch.Tensor, kept: torch.Tensor, count: int) -> torch.Tensor:
    """Contextual tokens of one view, as the reference forms them (dvlab-research/VisionZip, clip_encoder.py).

    Every step-th remaining patch is a target; each other remaining patch joins the target whose key is most
    cosine-similar; a contextual token is its target's hidden state plus the mean of the patches that joined it
    (the target not among them; the count clamped to >= 1, so a target nobody joined stays as it is).
    """
    remaining = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    remaining[kept] = False
    rest, rest_keys = features[remaining], keys[remaining]
    count = min(count, rest.shape[0])
    step = max(1, rest.shape[0] // max(count, 1))
    is_target = torch.zeros(rest.shape[0], dtype=torch.bool, device=rest.device)
    is_target[torch.arange(0, rest.shape[0], step, device=rest.device)[:count]] = True
    normed = rest_keys / rest_keys.norm(dim=-1, keepdim=True)
    assigned = (normed[~is_target] @ normed[is_target].T).argmax(dim=-1)
    sums = rest.new_zeros(count, rest.shape[-1]).index_add_(0, assigned, rest[~is_target])
    counts = torch.bincount(assigned, minlength=count).clamp(min=1).unsqueeze(-1)
    return rest[is_target] + sums / counts.to(sums.dtype)


def stock_rows(features: torch.Tensor) -> torch.Tensor:
    """(views, N) every patch index: a budget of every patch keeps the projector input as the stock model has it."""
    return torch.arange(features.shape[1], device=features.device).expand(features.shape[0], -1)
