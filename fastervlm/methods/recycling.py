"""Token recycling (SparseVLM, arXiv 2410.04417): pruned tokens merged by density-peak clustering, not lost.

As in the reference (Gumpest/SparseVLMs cluster_and_merge, after TCFormer's DPC-kNN), rewritten: the top
fraction of a stage's pruned tokens by score are the candidates; int(m / 10) + 1 centres are picked among them
and each candidate joins its nearest centre; a cluster's mean is the new token. Means are exact and in fp32
(the reference computes in the model's dtype and adds 1e-6 to each cluster's count).
"""

from __future__ import annotations

import math

import torch

CANDIDATES_PER_CLUSTER = 10  # the reference makes int(m / 10) + 1 tokens from m candidates


def recycled(scores: torch.Tensor, states: torch.Tensor, fraction: float) -> torch.Tensor:
    """The top `fraction` of pruned tokens by score (int(p x fraction) + 1 of p), one new token per ~10 of them.

    fraction 0 recycles nothing (the reference's + 1 would still merge one token).
    """
    if fraction == 0 or scores.numel() == 0:
        return states[:0]
    count = min(int(scores.numel() * fraction) + 1, scores.numel())
    candidates = states[scores.topk(count).indices]
    return density_peak_merge(candidates, count // CANDIDATES_PER_CLUSTER + 1)


def density_peak_merge(tokens: torch.Tensor, clusters: int) -> torch.Tensor:
    """DPC-kNN (TCFormer): centres are dense tokens far from any denser one; every token joins its nearest centre.

    Returns (clusters, dim) cluster means, centres in descending density x distance order. Equal densities are
    common (with k = 2, mutual nearest neighbours tie): the reference breaks them with 1e-6 random noise, here
    the earlier candidate (the higher-scored one) counts as denser, one of the outcomes the noise picks.
    """
    x = tokens.float()
    distance = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(x.shape[-1])
    nearest = distance.topk(clusters, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))
    order = torch.arange(x.shape[0], device=x.device)
    tied_earlier = (density.unsqueeze(0) == density.unsqueeze(1)) & (order.unsqueeze(0) < order.unsqueeze(1))
    denser = (density.unsqueeze(0) > density.unsqueeze(1)) | tied_earlier  # [i, j]: j is denser than i
    parent = torch.where(denser, distance, distance.max()).min(dim=-1).values
    centres = (parent * density).sort(descending=True, stable=True).indices[:clusters]
    assign = distance[:, centres].argmin(dim=-1)
    assign[centres] = torch.arange(clusters, device=x.device)
    sums = x.new_zeros(clusters, x.shape[-1]).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=clusters).unsqueeze(-1)
    return (sums / counts).to(tokens.dtype)
