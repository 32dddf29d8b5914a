"""Where, and how sharply, attention falls on the image tokens: the numbers behind `analyze shift|dispersion`.

Pure functions of attention rows, so they are tested on hand-made distributions and serve any model's rows.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch


def distribution(row: torch.Tensor) -> torch.Tensor:
    """The row renormalised to sum to 1 over its last axis (fp64, so shares of 576 tokens still sum to 1)."""
    row = row.double()
    total = row.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("an attention row with no mass on the image tokens has no distribution over them")
    return row / total


def entropy(row: torch.Tensor) -> float:
    """Shannon entropy in nats of the row as a distribution; 0 log 0 counts as 0 (a one-hot row gives 0)."""
    p = distribution(row)
    return float(-(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum())


def normalised_entropy(row: torch.Tensor) -> float:
    """Entropy / log N in [0, 1], so rows over different token counts compare; 1 is uniform."""
    n = row.shape[-1]
    return entropy(row) / math.log(n) if n > 1 else 0.0


def bin_shares(row: torch.Tensor, bins: int) -> list[float]:
    """The row's share in each of `bins` contiguous runs of positions (raster order), first to last."""
    n = row.shape[-1]
    if not 1 <= bins <= n:
        raise ValueError(f"bins must be between 1 and the {n} image tokens, got {bins!r}")
    p = distribution(row)
    return [float(part.sum()) for part in torch.tensor_split(p, bins, dim=-1)]


def centre_of_mass(row: torch.Tensor) -> float:
    """Mean position of the attention as a fraction of the image-token span: 0 the first token, 1 the last."""
    p = distribution(row)
    n = p.shape[-1]
    return float((p * torch.arange(n, dtype=p.dtype)).sum() / (n - 1)) if n > 1 else 0.0


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "median": statistics.median(values)}


def column_means(rows: list[list[float]]) -> list[float]:
    return [statistics.fmean(column) for column in zip(*rows, strict=True)]


@dataclass
class Shift:
    """Per image: the LLM last-token attention over the image tokens, binned by position (raster order).

    Shares come from the row averaged over layers and then renormalised over the image tokens; per-layer shares
    renormalise each layer's row, so a drift across depth shows too.
    """

    bins: int
    grid_rows: int
    shares: list[list[float]] = field(default_factory=list)
    row_shares: list[list[float]] = field(default_factory=list)
    layer_shares: list[list[list[float]]] = field(default_factory=list)
    first_quarter: list[float] = field(default_factory=list)
    last_quarter: list[float] = field(default_factory=list)
    centre: list[float] = field(default_factory=list)

    def add(self, rows: torch.Tensor) -> None:
        """rows: (layers, image tokens) of one image, as last_token_image_attention gives them."""
        mean = rows.mean(dim=0)
        quarters = bin_shares(mean, 4)
        self.shares.append(bin_shares(mean, self.bins))
        self.row_shares.append(bin_shares(mean, self.grid_rows))
        self.layer_shares.append([bin_shares(layer, self.bins) for layer in rows])
        self.first_quarter.append(quarters[0])
        self.last_quarter.append(quarters[-1])
        self.centre.append(centre_of_mass(mean))

    def to_json(self) -> dict:
        layers = len(self.layer_shares[0])
        return {
            "samples": len(self.shares),
            "bins": self.bins,
            "mean_share_per_bin": column_means(self.shares),
            "mean_share_per_grid_row": column_means(self.row_shares),
            "mean_share_per_bin_per_layer": [column_means([s[k] for s in self.layer_shares]) for k in range(layers)],
            "first_quarter_share": summary(self.first_quarter),
            "last_quarter_share": summary(self.last_quarter),
            "centre_of_mass": summary(self.centre),
            "per_image": [
                {
                    "share_per_bin": s,
                    "share_per_grid_row": r,
                    "share_per_bin_per_layer": per_layer,
                    "first_quarter_share": f,
                    "last_quarter_share": q,
                    "centre_of_mass": c,
                }
                for s, r, per_layer, f, q, c in zip(
                    self.shares,
                    self.row_shares,
                    self.layer_shares,
                    self.first_quarter,
                    self.last_quarter,
                    self.centre,
                    strict=True,
                )
            ],
        }


@dataclass
class Dispersion:
    """Per image: entropy of the LLM's last-token attention over the image tokens (each layer's row renormalised,
    then the mean over layers) and of the vision [CLS] attention over the patches, in nats and over log N."""

    llm_layers: list[list[float]] = field(default_factory=list)
    llm: list[float] = field(default_factory=list)
    llm_normalised: list[float] = field(default_factory=list)
    cls: list[float] = field(default_factory=list)
    cls_normalised: list[float] = field(default_factory=list)

    def add(self, llm_rows: torch.Tensor, cls_row: torch.Tensor) -> None:
        """llm_rows: (layers, image tokens); cls_row: (patches,) of one image."""
        per_layer = [entropy(layer) for layer in llm_rows]
        self.llm_layers.append(per_layer)
        self.llm.append(statistics.fmean(per_layer))
        self.llm_normalised.append(statistics.fmean(normalised_entropy(layer) for layer in llm_rows))
        self.cls.append(entropy(cls_row))
        self.cls_normalised.append(normalised_entropy(cls_row))

    def to_json(self) -> dict:
        return {
            "samples": len(self.llm),
            "llm_entropy": summary(self.llm),
            "llm_entropy_normalised": summary(self.llm_normalised),
            "llm_entropy_per_layer_mean": column_means(self.llm_layers),
            "cls_entropy": summary(self.cls),
            "cls_entropy_normalised": summary(self.cls_normalised),
            "per_image": [
                {
                    "llm_entropy": e,
                    "llm_entropy_normalised": en,
                    "llm_entropy_per_layer": layers,
                    "cls_entropy": c,
                    "cls_entropy_normalised": cn,
                }
                for e, en, layers, c, cn in zip(
                    self.llm, self.llm_normalised, self.llm_layers, self.cls, self.cls_normalised, strict=True
                )
            ],
        }
