"""FitPrune: remove a fitted number of visual tokens after each layer's attention (arXiv 2409.10197).

Read from the reference the FasterVLM paper ran (github.com/Theia-4869/FitPrune: fitprune_llama.py for the rule,
llava/eval/statistical_analysis.py for the recipe), written anew.

Recipe (offline, not per input): on 665 samples of LLaVA's training mix, the unpruned model's attention (head
max) gives per layer the total self-attention among visual tokens and cross-attention from the text to them; a
binary search over alpha in [0, 1] (to 0.01) finds the smallest alpha for which removing, layer by layer, the
tokens whose low self and low cross attention together hold at most alpha of those totals brings the LLM's FLOPs
to (1 - reduction_ratio) of the unpruned model; the per-layer removal counts, averaged over the samples, are
the schedule. The reference ships the schedules it fitted for LLaVA-1.5-7B (32 layers, 576 tokens) at
reduction_ratio 0, 10, ..., 100 %; they are SCHEDULES below, as data.

Rule (per sample, prefill): at every layer l with a count c_l, that layer's attention (post-softmax, max over
heads) scores the visual tokens: self = the mean over the visual query rows, cross = the mean over the text rows
after the image; the c_l tokens with the smallest self x cross leave after layer l's attention, so layer l and
its KV cache see them and the layers after it do not (dropping them after the MLP instead is the same, the MLP
being per token). Kept tokens keep their position ids.

Budget -> schedule: `ratio` / `tokens` name the mean visual tokens per layer (the reference's own "avg visual
tokens": those remaining after each layer's removal, over the 32 layers). The two fitted schedules whose means
bracket it are interpolated linearly in their remaining tokens per layer, so the mean is the budget; a sample with
n tokens keeps round(remaining x n / 576). `schedule=(c_0, ..., c_{L-1})` sets removal counts per 576 tokens
directly, for a model of another depth: fastervlm.calibrate.fit_schedule runs the recipe on the runtime, with
`alpha` / `attention_mass` set here (each calibration sample's own unpruned masses).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch

from fastervlm.budget import Budget, check_count, normalize_budget, real_number
from fastervlm.methods.signals import LlmSignals, LlmStages

REFERENCE_TOKENS = 576
REFERENCE_LAYERS = 32
# reduction_ratio % -> visual tokens removed after each of LLaVA-1.5-7B's 32 layers (fitprune_llama.py).
SCHEDULES: dict[int, tuple[int, ...]] = {
    0: (0,) * 32,
    10: (0, 0, 1, 2, 1, 0, 1, 4, 5, 5, 11, 4, 2, 2, 0, 0, 1, 1, 2, 4, 2, 10, 1, 1, 1, 2, 1, 1, 0, 1, 0, 0),
    20: (0, 0, 3, 3, 1, 1, 4, 16, 14, 15, 24, 4, 2, 3, 2, 0, 6, 0, 5, 13, 4, 19, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0),
    30: (0, 0, 7, 6, 4, 5, 16, 40, 24, 21, 24, 4, 2, 3, 4, 0, 16, 0, 11, 26, 6, 32, 3, 1, 0, 1, 2, 2, 4, 0, 0, 0),
    40: (0, 1, 21, 13, 14, 11, 41, 53, 29, 15, 14, 5, 1, 4, 5, 1, 26, 1, 13, 28, 6, 27, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    50: (3, 7, 49, 24, 29, 17, 59, 41, 26, 8, 10, 6, 2, 5, 7, 2, 30, 3, 13, 27, 5, 23, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    60: (14, 33, 89, 36, 36, 20, 55, 21, 18, 4, 7, 5, 2, 5, 7, 4, 26, 5, 11, 24, 4, 18, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    70: (48, 79, 118, 41, 33, 17, 36, 9, 9, 2, 3, 2, 1, 3, 4, 8, 18, 7, 8, 20, 4, 13, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    80: (128, 127, 118, 35, 26, 8, 13, 3, 2, 1, 0, 0, 0, 2, 1, 8, 7, 8, 5, 11, 2, 6, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0),
    90: (262, 153, 80, 19, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),
    100: (576,) + (0,) * 31,
}
DEFAULT_RATIO = 0.5  # statistical_analysis.py's default reduction_ratio


def remaining(schedule: tuple[int, ...]) -> list[int]:
    """Visual tokens (of 576) left after each layer's removal."""
    return [REFERENCE_TOKENS - removed for removed in accumulate(schedule)]


@dataclass(frozen=True)
class FitPruneConfig:
    """Remove visual tokens after each layer's attention by a fitted per-layer schedule (module docstring).

    Give at most one of ratio / tokens (mean visual tokens per layer; none = 50 %) and schedule (removal counts per
    576 tokens, one per layer). alpha / attention_mass are the fit's (fastervlm.calibrate): after each layer but
    the last, cut the tokens whose low self and low cross attention hold at most alpha of that layer's (self,
    cross) attention mass in the unpruned model, one pair per layer.
    """

    ratio: float | None = None
    tokens: int | None = None
    schedule: tuple[int, ...] | None = None
    alpha: float | None = None
    attention_mass: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        normalize_budget(self)
        given = [name for name in ("ratio", "tokens", "schedule", "alpha") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of ratio, tokens, schedule, alpha, got {', '.join(given)}")
        if (self.alpha is None) != (self.attention_mass is None):
            raise ValueError("alpha and attention_mass go together (the fit's rule), give both or neither")
        if self.alpha is not None:
            alpha = real_number("alpha", self.alpha, "share of a layer's attention mass that may be cut")
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1] (share of attention mass cut), got {self.alpha!r}")
            mass = tuple((float(a), float(b)) for a, b in self.attention_mass)
            object.__setattr__(self, "alpha", alpha)
            object.__setattr__(self, "attention_mass", mass)
        if self.schedule is not None:
            items = tuple(self.schedule) if isinstance(self.schedule, (list, tuple)) else ()
            schedule = tuple(check_count("schedule", x, "visual tokens removed after a layer") for x in items)
            if not schedule or sum(schedule) > REFERENCE_TOKENS:
                raise ValueError(
                    f"schedule must hold one int >= 0 per layer, removing at most {REFERENCE_TOKENS} in all (counts "
                    f"per {REFERENCE_TOKENS} visual tokens), got {self.schedule!r}"
                )
            object.__setattr__(self, "schedule", schedule)

    @property
    def budget(self) -> Budget:
        ratio = DEFAULT_RATIO if self.ratio is None and self.tokens is None else self.ratio
        return Budget(ratio, self.tokens)

    def stages(self, num_layers: int) -> LlmStages:
        """A stage after every layer that may remove tokens (the last layer's removal reaches no later layer)."""
        if self.alpha is not None:
            if len(self.attention_mass) != num_layers:
                raise ValueError(
                    f"attention_mass must hold one (self, cross) pair per layer of this {num_layers}-layer language "
                    f"model, got {len(self.attention_mass)}"
                )
            return LlmStages(tuple(range(1, num_layers)), queries="visual_text", heads="max")
        if self.schedule is None and num_layers != REFERENCE_LAYERS:
            raise ValueError(
                f"FitPrune's fitted schedules are for {REFERENCE_LAYERS}-layer language models (LLaVA-1.5-7B); this "
                f"one has {num_layers} layers: give schedule=(...) with {num_layers} removal counts per "
                f"{REFERENCE_TOKENS} tokens"
            )
        if self.schedule is not None and len(self.schedule) != num_layers:
            raise ValueError(
                f"schedule must hold one count per layer of this {num_layers}-layer language model, "
                f"got {len(self.schedule)}"
            )
        if self.schedule is not None:
            removing = [layer for layer, count in enumerate(self.schedule) if count]
        else:
            removing = [layer for layer in range(num_layers) if any(s[layer] for s in SCHEDULES.values())]
        layers = tuple(layer + 1 for layer in removing if layer + 1 < num_layers)
        if not layers:
            raise ValueError(f"schedule removes no token before the last layer, got {self.schedule!r}")
        return LlmStages(layers, queries="visual_text", heads="max")

    def kept_per_layer(self, num_visual: int) -> list[float]:
        """Fraction of a sample's visual tokens left after each layer, as the schedule (or budget) says."""
        if self.schedule is not None:
            return [r / REFERENCE_TOKENS for r in remaining(self.schedule)]
        target = self.budget.kept_at_most(num_visual) / num_visual if num_visual else 1.0
        anchors = sorted((sum(remaining(s)) / (REFERENCE_LAYERS * REFERENCE_TOKENS), s) for s in SCHEDULES.values())
        low = max((a for a in anchors if a[0] <= target), key=lambda a: a[0])
        high = min((a for a in anchors if a[0] >= target), key=lambda a: a[0])
        weight = 0.0 if high[0] == low[0] else (target - low[0]) / (high[0] - low[0])
        return [
            ((1 - weight) * a + weight * b) / REFERENCE_TOKENS
            for a, b in zip(remaining(low[1]), remaining(high[1]), strict=True)
        ]


def select(config: FitPruneConfig, signals: LlmSignals) -> list[torch.Tensor]:
    """Per sample: indices into its visual tokens, ascending, of those that stay after this stage's layer."""
    stages = config.stages(signals.num_layers)
    layer = stages.layers[signals.stage] - 1
    kept = []
    for b, attention in enumerate(signals.query_attention):
        n = attention.shape[1]
        is_visual = signals.query_is_visual[b].to(attention.device)
        self_attention = attention[is_visual].sum(dim=0) / max(int(is_visual.sum()), 1)
        cross = attention[~is_visual].sum(dim=0) / max(int((~is_visual).sum()), 1)
        if config.alpha is not None:
            mass_self, mass_cross = config.attention_mass[layer]
            cut = cut_by_mass(self_attention, mass_self, config.alpha)
            cut = cut[torch.isin(cut, cut_by_mass(cross, mass_cross, config.alpha))]
            stays = torch.ones(n, dtype=torch.bool, device=attention.device)
            stays[cut] = False
            kept.append(stays.nonzero().squeeze(1))
            continue
        fractions = config.kept_per_layer(signals.image_tokens[b])
        target = min(round(fractions[layer] * signals.image_tokens[b]), n)
        if target == n:
            kept.append(torch.arange(n, device=attention.device))
            continue
        order = torch.sort(self_attention * cross).indices
        kept.append(order[n - target :].sort().values)
    return kept


def cut_by_mass(scores: torch.Tensor, mass: float, alpha: float) -> torch.Tensor:
    """The lowest-scored tokens whose removal keeps the rest's sum >= mass - mass x alpha (statistical_analysis.py:
    the first count i whose removal drops below it, minus one). Where no count does, the reference reuses a stale
    count from an earlier sample; here every token but the highest may go."""
    order = torch.sort(scores).indices
    retained = scores.sum() - torch.cat([scores.new_zeros(1), scores[order].cumsum(dim=0)])[: len(scores)]
    below = (retained < mass - mass * alpha).nonzero().squeeze(1)
    count = max(int(below[0]) - 1, 0) if len(below) else max(len(scores) - 1, 0)
    return order[:count]
