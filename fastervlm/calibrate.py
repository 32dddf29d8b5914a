"""FitPrune's offline recipe: fit a per-layer removal schedule to a FLOPs target on calibration samples.

Read from the reference (github.com/Theia-4869/FitPrune, llava/eval/statistical_analysis.py), written anew:
1. attention mass: each sample through the unpruned model with eager attention; per layer, of the head-max map,
   the visual block's sum over the visual count (self) and the text-after-the-image rows' sum over the visual
   columns, over that row count (cross);
2. for an alpha, each layer of each sample cuts the tokens that are among both the lowest-self and the
   lowest-cross ones holding at most alpha of that layer's unpruned mass (FitPruneConfig's alpha rule, run by the
   runtime one sample at a time);
3. FLOPs, as the reference counts them (hidden size d, MLP size m, L layers, the visual tokens only): layer by
   layer over all samples, q/k/v and attention on the tokens entering, o_proj and MLP on those leaving; before
   each layer, if what was spent plus what the rest would cost at the current counts is at most
   (1 - ratio) of the unpruned model, the cutting stops there. The schedule: each layer's cuts up to that point,
   summed over the samples, floor-divided by their number;
4. binary search on alpha in [0, 1] until the bracket is under epsilon (0.01): reaching the target narrows it
   from above. The schedule of the last alpha tried is the result, as in the reference.
Runs per sample, which is the reference's layer-major loop exactly: cutting stops for all samples at once, at a
layer that only the counts before it decide. The last layer cuts nothing here (no later layer would see it; the
reference's FLOPs count then keeps its MLP on every token). The schedule is returned per 576 visual tokens, the
unit FitPruneConfig(schedule=...) takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import fastervlm
from fastervlm.methods.fitprune import REFERENCE_TOKENS, FitPruneConfig
from fastervlm.models import adapter_for


@dataclass(frozen=True)
class FitResult:
    schedule: tuple[int, ...]  # visual tokens removed after each layer, per 576
    alpha: float  # the last alpha tried
    reached: bool  # whether that alpha met the FLOPs target


def attention_mass(model: nn.Module, inputs: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    """Per layer, the unpruned (self, cross) attention mass of one sample (batch 1, no padding)."""
    adapter = adapter_for(model)
    language_model = adapter.language_model(model)
    ids = torch.tensor([m.token_id for m in adapter.modalities(model)], device=inputs["input_ids"].device)
    visual = torch.isin(inputs["input_ids"][0], ids)
    after = torch.arange(len(visual), device=visual.device) > int(visual.nonzero().max())
    previous = language_model.config._attn_implementation
    language_model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
    finally:
        language_model.set_attn_implementation(previous)
    masses = []
    for weights in attentions:
        headmax = weights[0].max(dim=0).values.float()
        block = headmax[visual][:, visual]
        masses.append((float(block.sum()) / len(block), float(headmax[after][:, visual].sum()) / int(after.sum())))
    return tuple(masses)


def visual_per_layer(model: nn.Module, inputs: dict[str, Any], config: FitPruneConfig) -> list[int]:
    """Visual tokens entering each layer of one sample under the alpha rule."""
    fastervlm.prune(model, config)
    try:
        with torch.no_grad():
            model(**inputs)
        report = fastervlm.last_report(model)
    finally:
        fastervlm.unprune(model)
    text = report.llm_input_lengths[0] - report.visual_tokens_in
    return [n - text for n in report.seq_len_per_layer[0]]


def layer_flops(n: int, layers: int, hidden: int, inner: int) -> int:
    """statistical_analysis.py's calculate_flops: n visual tokens through `layers` whole layers."""
    return (4 * n * hidden**2 + 2 * n**2 * hidden + 3 * n * inner * hidden) * layers


def scheme_of(entering: Sequence[Sequence[int]], ratio: float, hidden: int, inner: int) -> tuple[bool, list[int]]:
    """fit_model's FLOPs walk over the samples' per-layer counts: (target reached, cuts per layer)."""
    samples, layers = len(entering), len(entering[0])
    budget = sum(layer_flops(v[0], layers, hidden, inner) for v in entering) / samples * (1 - ratio)
    used, scheme = 0, [0] * layers
    for layer in range(layers):
        forecast = 0
        for v in entering:
            used += 3 * v[layer] * hidden**2 + 2 * v[layer] ** 2 * hidden
            rest = v[layer] * hidden**2 + 3 * v[layer] * inner * hidden
            forecast += rest + layer_flops(v[layer], layers - 1 - layer, hidden, inner)
        if (used + forecast) / samples <= budget:
            return True, [s // samples for s in scheme]
        for v in entering:
            leaving = v[layer + 1] if layer + 1 < layers else v[layer]
            scheme[layer] += v[layer] - leaving
            used += leaving * hidden**2 + 3 * leaving * inner * hidden
    return used / samples <= budget, [s // samples for s in scheme]


def fit_schedule(model: nn.Module, samples: Sequence[dict[str, Any]], ratio: float, epsilon: float = 0.01) -> FitResult:
    """FitPrune's schedule for `model` at FLOPs reduction `ratio`, fitted on `samples` (each one batch-1 input)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1) (the FLOPs reduction to fit), got {ratio!r}")
    if not samples:
        raise ValueError("samples must hold at least one calibration input")
    text = model.config.get_text_config()
    masses = [attention_mass(model, inputs) for inputs in tqdm(samples, desc="FitPrune attention mass")]
    low, high, alpha, reached, scheme = 0.0, 1.0, 0.0, False, [0] * text.num_hidden_layers
    with tqdm(desc="FitPrune alpha search", unit="alpha") as progress:
        while high - low > epsilon:
            alpha = (low + high) / 2
            entering = [
                visual_per_layer(model, inputs, FitPruneConfig(alpha=alpha, attention_mass=mass))
                for inputs, mass in zip(samples, masses, strict=True)
            ]
            reached, scheme = scheme_of(entering, ratio, text.hidden_size, text.intermediate_size)
            low, high = (low, alpha) if reached else (alpha, high)
            progress.update()
    return FitResult(per_reference_tokens(scheme, visual_counts(model, samples)), alpha, reached)


def visual_counts(model: nn.Module, samples: Sequence[dict[str, Any]]) -> float:
    adapter = adapter_for(model)
    ids = torch.tensor([m.token_id for m in adapter.modalities(model)])
    return sum(int(torch.isin(s["input_ids"][0].cpu(), ids).sum()) for s in samples) / len(samples)


def per_reference_tokens(scheme: Sequence[int], visual: float) -> tuple[int, ...]:
    """Cuts for samples of `visual` tokens on average, as cuts per 576 (the same share left after each layer)."""
    left, out, removed = REFERENCE_TOKENS, [], 0
    for cut in scheme:
        removed += cut
        now = round(REFERENCE_TOKENS * (visual - removed) / visual)
        out.append(left - now)
        left = now
    return tuple(out)
