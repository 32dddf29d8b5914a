"""SparseVLM: text raters score visual tokens inside the LLM, pruned in stages and recycled (arXiv 2410.04417).

Read from the reference (github.com/Gumpest/SparseVLMs, v1.5 branch score.py / modelling_sparse_llama.py, and
the v1 code), written anew. Per sample, with V / T the language model's input embeddings of the image tokens /
of the text after the first image:
- raters: text tokens whose relevance softmax_T(V T^T), averaged over V, exceeds its mean (all text if none does);
- at each pruning layer l (2, 6, 15): layer l's own attention (post-softmax, heads averaged) from the raters to
  the visual tokens, averaged over raters, scores them; the top k stay, in place; layer l's output is shortened,
  so layers <= l see the stage's input and layers > l the shorter sequence; positions are contiguous;
- k: v1.5 takes the stage's entry of the schedule below; v1 takes int(rank(R) x scale + bias), R the
  (raters x visual) attention, and keeps every token when R has full column rank;
- recycling (methods/recycling.py): the best-scored of the pruned tokens, merged in layer l's output states into
  a few new visual tokens, inserted right after the sample's last visual token; later stages score and prune
  them like any visual token.
Choices where the reference is silent or differs: k is capped at the visual count (the reference caps at one
less and recycles the token it then drops, reordering it, so ratio 0 could not be the stock model); a stage
that keeps none recycles none (ratio 1 removes every visual token); samples with several images pool them.

Schedule for a budget of T tokens out of a sample's n: the reference's schedules for 64 / 128 / 192 of 576,
plus (0, 0, 0) for 0 and (n, n, n) for n, as fractions of n, interpolated linearly in T / n and rounded, so
tokens=192 on 576 is exactly (300, 200, 110). At 25/50/75/90/95 % on 576 (T = 432/288/144/58/29):
(472, 435, 401), (369, 294, 226), (302, 132, 54), (60, 27, 15), (30, 14, 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastervlm.budget import Budget, check_count, normalize_budget, real_number
from fastervlm.methods.recycling import recycled
from fastervlm.methods.signals import LlmMerged, LlmSignals, LlmStages

VERSIONS = ("1.5", "1")
REFERENCE_PATCHES = 576
ANCHORS = {0: (0, 0, 0), 64: (66, 30, 17), 128: (303, 110, 36), 192: (300, 200, 110), 576: (576, 576, 576)}
DEFAULT_RATIO = 1 - 192 / REFERENCE_PATCHES  # the reference's default schedule, 192 of 576 tokens


@dataclass(frozen=True)
class SparseVLMConfig:
    """Prune visual tokens at layers (2, 6, 15) by what the question's relevant words attend to, recycling some.

    Budget (v1.5; give at most one, none = 192 of 576): ratio / tokens name a target per sample mapped to a
    schedule (module docstring); schedule gives the kept visual tokens per layer directly. version="1" sets each
    stage's count from the rater attention's rank instead: int(rank x scale + bias) (the reference's README ran
    scale 13.5 for 192, scale 9 with bias 6 for 128, scale 0.8 for 64 tokens). recycle: fraction of each
    stage's pruned tokens merged into new ones (0 disables).
    """

    ratio: float | None = None
    tokens: int | None = None
    schedule: tuple[int, ...] | None = None
    version: str = "1.5"
    scale: float | None = None
    bias: float = 0.0
    layers: tuple[int, ...] = (2, 6, 15)
    recycle: float = 0.3

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        layers = int_tuple("layers", self.layers, "ascending pruning layers")
        if layers != tuple(sorted(set(layers))):
            raise ValueError(f"layers must be ascending ints >= 0 (pruning layers), got {self.layers!r}")
        object.__setattr__(self, "layers", layers)
        given = [name for name in ("ratio", "tokens", "schedule") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of ratio, tokens, schedule, got {', '.join(given)}")
        if self.version == "1":
            if given or self.scale is None:
                raise ValueError(
                    "version='1' sets each stage's count as int(rank x scale + bias): give scale (e.g. 13.5), "
                    f"not {' / '.join(given) or 'nothing'}"
                )
            object.__setattr__(self, "scale", check_number("scale", self.scale, 0, math.inf))
            object.__setattr__(self, "bias", check_number("bias", self.bias, -math.inf, math.inf))
        elif self.scale is not None or self.bias != 0.0:
            raise ValueError("scale and bias apply to version='1' only; version='1.5' follows a schedule")
        if self.schedule is not None:
            schedule = int_tuple("schedule", self.schedule, f"kept visual tokens, one per pruning layer {layers}")
            if len(schedule) != len(layers):
                raise ValueError(f"schedule must hold one int >= 0 per pruning layer {layers}, got {self.schedule!r}")
            object.__setattr__(self, "schedule", schedule)
        elif self.version == "1.5" and len(layers) != 3:
            raise ValueError(f"the reference schedules have 3 stages; with layers={layers} give schedule=(...)")
        normalize_budget(self)
        self.budget  # noqa: B018 - validates ratio / tokens
        object.__setattr__(self, "recycle", check_number("recycle", self.recycle, 0, 1))

    @property
    def budget(self) -> Budget:
        ratio = DEFAULT_RATIO if self.ratio is None and self.tokens is None else self.ratio
        return Budget(ratio, self.tokens)

    def stages(self, num_layers: int) -> LlmStages:
        """Layer l's output is pruned: the stage shortens the input of layer l + 1, scoring with layer l's q/k."""
        if self.layers[-1] > num_layers - 2:
            raise ValueError(
                f"layers must be in [0, {num_layers - 2}] for this {num_layers}-layer language model (a later layer "
                f"must see the pruned output), got {self.layers}"
            )
        return LlmStages(tuple(layer + 1 for layer in self.layers), queries="text", contiguous=True)

    def stage_counts(self, num_image: int) -> tuple[int, ...]:
        """v1.5: the visual tokens each stage keeps for a sample with num_image image tokens."""
        if self.schedule is not None:
            return self.schedule
        if num_image == 0:
            return (0,) * len(self.layers)
        target = self.budget.kept_at_most(num_image) * REFERENCE_PATCHES / num_image
        low = max(a for a in ANCHORS if a <= target)
        high = min(a for a in ANCHORS if a >= target)
        weight = 0.0 if high == low else (target - low) / (high - low)
        return tuple(
            round(((1 - weight) * a + weight * b) * num_image / REFERENCE_PATCHES)
            for a, b in zip(ANCHORS[low], ANCHORS[high], strict=True)
        )


def int_tuple(name: str, value: object, what: str) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not items:
        raise ValueError(f"{name} must be a non-empty tuple of ints >= 0 ({what}), got {value!r}")
    return tuple(check_count(name, x, what) for x in items)


def check_number(name: str, value: object, low: float, high: float) -> float:
    number = real_number(name, value, f"in [{low}, {high}]")
    if not low <= number <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return number


def select(config: SparseVLMConfig, signals: LlmSignals) -> list[LlmMerged]:
    """Per sample: visual tokens kept at this stage (indices, ascending) and the recycled tokens."""
    out = []
    for b, attention in enumerate(signals.query_attention):
        relation = attention[raters(signals.image_embeds[b], signals.query_embeds[b])]
        scores = relation.mean(dim=0)
        n = scores.numel()
        if config.version == "1":
            rank = int(torch.linalg.matrix_rank(relation.float()))
            k = n if rank == n else int(rank * config.scale + config.bias)
        else:
            k = config.stage_counts(len(signals.image_embeds[b]))[signals.stage]
        k = min(max(k, 0), n)
        kept = scores.topk(k).indices.sort().values
        pruned = torch.ones(n, dtype=torch.bool, device=scores.device)
        pruned[kept] = False
        states = signals.visual_states[b]
        made = recycled(scores[pruned], states[pruned], config.recycle) if k > 0 else states[:0]
        out.append(LlmMerged(kept=kept, tokens=made))
    return out


def raters(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Text rows relevant to the image: softmax over the text of V T^T, averaged over V, above its mean."""
    relevance = torch.softmax(image.float() @ text.float().T, dim=-1).mean(dim=0)
    chosen = (relevance > relevance.mean()).nonzero().squeeze(1)
    return chosen if chosen.numel() else torch.arange(text.shape[0], device=text.device)
