"""PyramidDrop: drop image tokens in stages inside the LLM, keeping a fraction lambda at each (arXiv 2410.17247).

Read from the reference (github.com/Cooperx521/PyramidDrop, llava/model/modeling_llama_pdrop.py pdrop_forward and
pdrop_rank_drop; scripts/v1_5/pdrop_eval/*.sh for the defaults), written anew. Per sample with n image tokens:
- stages: after layers 8, 16 and 24 (the reference's `layer_list`, used for the 32-layer 7B and the 40-layer
  13B alike); from stage s on, int(n x lambda^s) image tokens remain (lambda = 0.5 in the reference's scripts);
- rank: at the stage's first layer K, that layer's own input norm and q/k projections are applied to its input
  (the whole, unshortened sequence, rotary embedding at the current positions); the last instruction token's
  attention, softmax over every key it may see and averaged over heads, ranks the image tokens; the top ones
  stay in order and layer K runs on the shorter sequence;
- positions are contiguous in the shorter sequence (the reference rebuilds them), prefill and decode.

Budget -> lambda: the reference's knob is lambda; `ratio` / `tokens` name the mean image tokens per layer
instead, as the authors advise for fixed budgets (github.com/Cooperx521/PyramidDrop/issues/29): lambda solves
sum_s len_s x lambda^s / L = k / n, len_s the layers of stage s and L the model's depth, k the sample's budget
(round((1 - ratio) n) or `tokens`). On a 32-layer LLaVA-1.5 with n = 576: 25 % -> lambda 0.811 (stages keep
576 / 466 / 378 / 306), 50 % -> 0.544 (576 / 313 / 170 / 92); 75 % is lambda 0 (576 / 0 / 0 / 0). A budget below
len_0 / L of the tokens cannot be met while layers before the first stage see every token: prune() (or, for a
`tokens` budget, the forward) refuses it and names earlier layers to use, e.g. layers=(2, 8, 16) as the authors
suggest (64 of 576 tokens: lambda 0.19).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, check_count, normalize_budget, real_number
from fastervlm.methods.signals import LlmSignals, LlmStages

DEFAULT_LAMBDA = 0.5  # the reference scripts' image_token_ratio_list [0.5, 0.25, 0.125]


@dataclass(frozen=True)
class PyramidDropConfig:
    """Keep int(n x lam^s) image tokens from the s-th stage layer on, ranked by the last instruction token.

    Give at most one of ratio / tokens (mean image tokens per layer, mapped to lam; module docstring) and lam (the
    reference's lambda); none = lam 0.5. layers: the stage layers, ascending (8, 16, 24).
    """

    ratio: float | None = None
    tokens: int | None = None
    lam: float | None = None
    layers: tuple[int, ...] = (8, 16, 24)

    def __post_init__(self) -> None:
        normalize_budget(self)
        given = [name for name in ("ratio", "tokens", "lam") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of ratio, tokens, lam, got {', '.join(given)}")
        if self.lam is not None:
            lam = real_number("lam", self.lam, "image tokens kept per stage, as a fraction of the previous")
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"lam must be in [0, 1] (fraction kept per stage), got {self.lam!r}")
            object.__setattr__(self, "lam", lam)
        items = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else ()
        layers = tuple(check_count("layers", x, "stage layers") for x in items)
        if not layers or layers != tuple(sorted(set(layers))) or layers[0] < 1:
            raise ValueError(f"layers must be ascending ints >= 1 (stage layers), got {self.layers!r}")
        object.__setattr__(self, "layers", layers)

    @property
    def budget(self) -> Budget | None:
        """The ratio / tokens budget, or None when lam is given (or nothing: lam 0.5)."""
        return None if self.ratio is None and self.tokens is None else Budget(self.ratio, self.tokens)

    def stages(self, num_layers: int) -> LlmStages:
        """A stage at each layer, scored with that layer's own projections of its input; a budget checked here."""
        if self.layers[-1] > num_layers - 1:
            raise ValueError(
                f"layers must be in [1, {num_layers - 1}] for this {num_layers}-layer language model, got {self.layers}"
            )
        if self.ratio is not None:
            self.check_reachable(1.0 - self.ratio, num_layers)
        return LlmStages(self.layers, queries="last", contiguous=True, score="own")

    def check_reachable(self, fraction: float, num_layers: int) -> None:
        floor = self.layers[0] / num_layers
        if fraction < floor - 1e-9:
            raise ValueError(
                f"PyramidDrop with layers={self.layers} keeps at least {floor:.1%} of the image tokens on average over "
                f"this {num_layers}-layer model (layers before {self.layers[0]} see all of them), so a budget of "
                f"{fraction:.1%} cannot be met; give earlier layers, e.g. layers=(2, 8, 16) (the authors' choice for "
                "64 of 576 tokens)"
            )

    def lam_for(self, kept: int, num_image: int, num_layers: int) -> float:
        """lambda whose mean kept tokens per layer, sum_s len_s lambda^s / L, is kept / num_image (bisection)."""
        if self.budget is None:
            return DEFAULT_LAMBDA if self.lam is None else self.lam
        if num_image == 0 or kept >= num_image:
            return 1.0
        fraction = kept / num_image
        self.check_reachable(fraction, num_layers)
        bounds = [0, *self.layers, num_layers]
        lengths = [b - a for a, b in itertools.pairwise(bounds)]
        low, high = 0.0, 1.0
        for _ in range(60):
            mid = (low + high) / 2
            mean = sum(length * mid**s for s, length in enumerate(lengths)) / num_layers
            low, high = (mid, high) if mean < fraction else (low, mid)
        return (low + high) / 2

    def stage_counts(self, num_image: int, num_layers: int) -> list[int]:
        """Image tokens kept from each stage layer on, the reference's int(n x lambda^s)."""
        kept = self.budget.kept_at_most(num_image) if self.budget is not None else num_image
        lam = self.lam_for(kept, num_image, num_layers)
        return [int(num_image * lam**s) for s in range(1, len(self.layers) + 1)]


def select(config: PyramidDropConfig, signals: LlmSignals) -> list[torch.Tensor]:
    """Per sample: indices into its remaining image tokens, ascending, of the top by the last token's attention."""
    kept = []
    for b, scores in enumerate(signals.image_attention):
        count = config.stage_counts(signals.image_tokens[b], signals.num_layers)[signals.stage]
        kept.append(scores.topk(min(count, scores.numel())).indices.sort().values)
    return kept
