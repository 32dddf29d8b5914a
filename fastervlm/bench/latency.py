"""Measured speed: time to first token, decode throughput, generate time and peak memory, per method x ratio.

Every cell runs on the same randomly initialised model (speed does not depend on weight values), pruned and
unpruned in turn; repeats are interleaved across cells so that a noisy machine slows every cell alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

import fastervlm
from fastervlm.api import ATTR
from fastervlm.bench.archs import Arch
from fastervlm.bench.flops import flops, prune_for
from fastervlm.models import adapter_for
from fastervlm.runtime.probe import ClsRowProbe


@dataclass
class LatencyRow:
    arch: str
    device: str
    dtype: str
    batch: int
    method: str
    ratio: float
    visual_tokens: int  # per sample, entering the deepest layer
    prefill_ms: float  # median time to first token (one forward over the batch)
    prefill_iqr_ms: float
    decode_tok_s: float  # tokens per second over the batch, one cached decode step at a time
    generate_ms: float
    peak_mem_mb: float | None  # CUDA only: torch does not track CPU allocations
    speedup_measured: float  # unpruned prefill time / this prefill time
    speedup_ideal: float  # unpruned prefill FLOPs / this prefill FLOPs (counted, same widths)

    def as_dict(self) -> dict:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return 1000 * (time.perf_counter() - start)


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q3 - q1


def latency(
    arch: Arch,
    cells: list[tuple[str, float]],
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    batch: int = 1,
    new_tokens: int = 16,
    repeats: int = 5,
    warmup: int = 1,
) -> list[LatencyRow]:
    """Rows in `cells` order; ("none", 0.0) is the unpruned baseline and is added if missing."""
    if ("none", 0.0) not in cells:
        cells = [("none", 0.0), *cells]
    target = torch.device(device)
    model = arch.model(scale).to(target, dtype)
    inputs = {k: v.to(target) for k, v in arch.sample(batch).items()}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    prefill: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    decode: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    generate: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    peak: dict[int, float | None] = {}
    visual: dict[int, int] = {}
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    rounds = tqdm(range(warmup + repeats), desc=f"latency {arch.scaled_name(scale)} on {device}", unit="round")
    with torch.no_grad():
        for r in rounds:
            for i, (method, ratio) in enumerate(cells):
                prune_for(arch, model, method, ratio)
                try:
                    if target.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(target)
                    first = timed(lambda: model(**inputs, logits_to_keep=1), target)
                    steps = timed(decode_steps(model, inputs, new_tokens), target)
                    whole = timed(lambda: model.generate(**inputs, **options), target)
                    if r >= warmup:
                        prefill[i].append(first)
                        decode[i].append(steps)
                        generate[i].append(whole)
                    peak[i] = torch.cuda.max_memory_allocated(target) / 2**20 if target.type == "cuda" else None
                    visual[i] = deepest_visual(model, inputs, method)
                finally:
                    if hasattr(model, ATTR):
                        fastervlm.unprune(model)
    ideal = {cell: flops(arch, cell[0], cell[1], "counted", scale).flops_t for cell in cells}
    base_ms = statistics.median(prefill[0])
    rows = []
    for i, (method, ratio) in enumerate(cells):
        median, iqr = quartiles(prefill[i])
        whole = statistics.median(generate[i])
        decode_s = statistics.median(decode[i]) / 1000
        rows.append(
            LatencyRow(
                arch=arch.scaled_name(scale),
                device=device,
                dtype=str(dtype).removeprefix("torch."),
                batch=batch,
                method=method,
                ratio=ratio,
                visual_tokens=visual[i],
                prefill_ms=median,
                prefill_iqr_ms=iqr,
                decode_tok_s=batch * new_tokens / decode_s,
                generate_ms=whole,
                peak_mem_mb=peak[i],
                speedup_measured=base_ms / median,
                speedup_ideal=ideal[("none", 0.0)] / ideal[(method, ratio)],
            )
        )
    return rows


def decode_steps(model: nn.Module, inputs: dict, steps: int) -> Callable[[], None]:
    """Prefill now (untimed); return the decode loop to time: one cached token per step, greedy."""
    out = model(**inputs, use_cache=True, logits_to_keep=1)

    # An unpadded batch steps without a mask, as the model then counts positions from the cache: transformers
    # 5.23's M-RoPE models (Qwen-VL) cannot number a cached step from a 2-D mask.
    padded = not bool(inputs["attention_mask"].all())

    def run() -> None:
        token, cache, mask = out.logits[:, -1:].argmax(-1), out.past_key_values, inputs["attention_mask"]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            step = model(
                input_ids=token, attention_mask=mask if padded else None, past_key_values=cache, logits_to_keep=1
            )
            token = step.logits[:, -1:].argmax(-1)

    return run


def deepest_visual(model: nn.Module, inputs: dict, method: str) -> int:
    """Visual tokens of the first sample that reach the last layer."""
    total = int(inputs["attention_mask"][0].sum())
    tokens = torch.tensor([m.token_id for m in adapter_for(model).modalities(model)])
    visual = int(torch.isin(inputs["input_ids"][0], tokens.to(inputs["input_ids"].device)).sum())
    if not hasattr(model, ATTR):
        return visual
    report = fastervlm.last_report(model)
    return report.seq_len_per_layer[0][-1] - (total - visual)


@dataclass
class ScoringCost:
    """The [CLS] score two ways: one query row from hooked q/k (ours) vs every attention map (the reference)."""

    arch: str
    device: str
    views: int
    tower_ms: float  # the vision tower alone, stock kernel
    one_row_ms: float  # the tower with the one-row probe
    all_maps_ms: float  # the tower run eagerly with output_attentions=True
    one_row_peak_mb: float | None
    all_maps_peak_mb: float | None


def scoring_cost(
    arch: Arch, *, device: str = "cpu", dtype: torch.dtype = torch.float32, scale: float = 1.0, repeats: int = 5
) -> ScoringCost:
    target = torch.device(device)
    model = arch.model(scale).to(target, dtype)
    tower = getattr(model.model, arch.tower)
    sample = arch.sample(1)
    pixels = sample.get("pixel_values", sample.get("pixel_values_videos")).to(target, dtype)
    pixels = pixels.flatten(0, pixels.dim() - 4)  # views (crops or frames) as a batch
    adapter = adapter_for(model, **arch.options)
    probe = ClsRowProbe(adapter.vision_attention(model, "video" if arch.tower == "video_tower" else "image", None))

    def run(step: Callable[[], object]) -> tuple[float, float | None]:
        times, peak = [], None
        for r in range(repeats + 1):
            if target.type == "cuda":
                torch.cuda.reset_peak_memory_stats(target)
            t = timed(step, target)
            if r:
                times.append(t)
            peak = torch.cuda.max_memory_allocated(target) / 2**20 if target.type == "cuda" else None
        return statistics.median(times), peak

    def eager_maps() -> None:
        tower.set_attn_implementation("eager")
        try:
            tower(pixels, output_attentions=True)
        finally:
            tower.set_attn_implementation(model.config._attn_implementation)

    def with_probe() -> None:
        probe.arm()
        tower(pixels)
        probe.disarm()

    with torch.no_grad():
        stock_ms, _ = run(lambda: tower(pixels))
        one_ms, one_peak = run(with_probe)
        all_ms, all_peak = run(eager_maps)
    for remove in probe.removers():
        remove()
    return ScoringCost(arch.scaled_name(scale), device, pixels.shape[0], stock_ms, one_ms, all_ms, one_peak, all_peak)
