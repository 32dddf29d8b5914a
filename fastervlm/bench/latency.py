"""Measured speed: time to first token, decode throughput, generate time and peak memory, per method x ratio.

Every cell runs on the same randomly initialised model (speed does not depend on weight values), pruned and
unpruned in turn; repeats are interleaved across cells so that a noisy machine slows every cell alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

import fastervlm
from fastervlm.api import ATTR
from fastervlm.bench.archs import Arch
from fastervlm.bench.flops import Budget, budget_ratio, flops, prune_for
from fastervlm.bench.memory import peak_mb, reset_peak
from fastervlm.models import adapter_for
from fastervlm.runtime.probe import ClsRowProbe
from fastervlm.runtime.trim import trim_tower


@dataclass
class LatencyRow:
    arch: str
    device: str
    dtype: str
    batch: int
    method: str
    ratio: float  # for a token-budget row, the ratio it amounts to
    visual_tokens: int  # per sample, entering the deepest layer
    prefill_ms: float  # median time to first token (one forward over the batch)
    prefill_iqr_ms: float
    decode_tok_s: float  # tokens per second over the batch, one cached decode step at a time
    generate_ms: float
    peak_mem_mb: float | None  # CUDA allocator peak, or the process's peak RSS on a Linux CPU (fastervlm.bench.memory)
    speedup_measured: float  # stock prefill time / this prefill time
    speedup_ideal: float  # stock prefill FLOPs / this prefill FLOPs (counted, same widths)
    # The same against the stock model with the pruned model's exact cuts (tower stopped at the feature layer):
    # the speed-up pruning itself buys, with the work no output needs taken out of both sides.
    speedup_trimmed: float = 1.0
    speedup_ideal_trimmed: float = 1.0
    tokens: int | None = None  # the token budget per view of a field-budget row (192 / 128 / 64)
    attn: str = "sdpa"  # the attention implementation the model ran with

    def as_dict(self) -> dict:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# "wall": elapsed time. "cpu": this process's CPU time, which a shared CPU machine's other load barely moves (with
# one torch thread it is the step's own compute time; with more it sums the threads). CPU devices only.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = ["wall"]


@contextmanager
def clock(name: str) -> Iterator[None]:
    """Time every step inside with CLOCKS[name]."""
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    outer, _clock[0] = _clock[0], name
    try:
        yield
    finally:
        _clock[0] = outer


def now(device: torch.device) -> float:
    """Seconds on the current clock, after the device has finished its queued work."""
    if _clock[0] == "cpu" and device.type == "cuda":
        raise ValueError("clock 'cpu' times host work only; use clock 'wall' on cuda")
    synchronize(device)
    return CLOCKS[_clock[0]]()


def timed(step: Callable[[], object], device: torch.device) -> float:
    start = now(device)
    step()
    return 1000 * (now(device) - start)


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q3 - q1


def latency(
    arch: Arch,
    cells: list[tuple[str, Budget]],
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    batch: int = 1,
    new_tokens: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    attn: str = "sdpa",
) -> list[LatencyRow]:
    """Rows in `cells` order; ("none", 0.0) is the unpruned baseline and is added if missing.

    A cell's budget is a ratio (float) or a token budget per view (int). Each round also times the stock prefill
    with the vision tower trimmed to its feature layer, the baseline of the `*_trimmed` speed-ups.
    """
    if ("none", 0.0) not in cells:
        cells = [("none", 0.0), *cells]
    target = torch.device(device)
    model = built(arch, scale, target, dtype, attn)
    inputs = {k: v.to(target) for k, v in arch.sample(batch).items()}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    trimmed: list[float] = []
    prefill: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    decode: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    generate: dict[int, list[float]] = {i: [] for i in range(len(cells))}
    peak: dict[int, float | None] = {}
    visual: dict[int, int] = {}
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    rounds = tqdm(range(warmup + repeats), desc=f"latency {arch.scaled_name(scale)} on {device}", unit="round")
    with torch.no_grad():
        for r in rounds:
            trimmed_ms = trimmed_prefill(arch, model, inputs, target)
            if r >= warmup:
                trimmed.append(trimmed_ms)
            for i, (method, ratio) in enumerate(cells):
                prune_for(arch, model, method, ratio)
                try:
                    reset_peak(target)
                    first = timed(lambda: model(**inputs, logits_to_keep=1), target)
                    steps = timed(decode_steps(model, inputs, new_tokens), target)
                    whole = timed(lambda: model.generate(**inputs, **options), target)
                    if r >= warmup:
                        prefill[i].append(first)
                        decode[i].append(steps)
                        generate[i].append(whole)
                    peak[i] = peak_mb(target)
                    visual[i] = deepest_visual(model, inputs, method)
                finally:
                    if hasattr(model, ATTR):
                        fastervlm.unprune(model)
    counted = {cell: flops(arch, cell[0], cell[1], "counted", scale) for cell in cells}
    ideal = {cell: row.flops_t for cell, row in counted.items()}
    stock = counted[("none", 0.0)]
    ideal_trimmed = stock.flops_t - (stock.vision_cut_t if not arch.options else 0.0)
    base_ms, trimmed_ms = statistics.median(prefill[0]), statistics.median(trimmed)
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
                ratio=budget_ratio(arch, ratio),
                tokens=ratio if isinstance(ratio, int) else None,
                visual_tokens=visual[i],
                prefill_ms=median,
                prefill_iqr_ms=iqr,
                decode_tok_s=batch * new_tokens / decode_s,
                generate_ms=whole,
                peak_mem_mb=peak[i],
                speedup_measured=base_ms / median,
                speedup_ideal=ideal[("none", 0.0)] / ideal[(method, ratio)],
                speedup_trimmed=trimmed_ms / median,
                speedup_ideal_trimmed=ideal_trimmed / ideal[(method, ratio)],
                attn=attn,
            )
        )
    return rows


def built(arch: Arch, scale: float, device: torch.device, dtype: torch.dtype, attn: str = "sdpa") -> nn.Module:
    """The arch's random model made on the device itself (a 7B model initialised on a CPU first takes minutes)."""
    with device:
        model = arch.model(scale)
    model = model.to(device, dtype)
    if attn != "sdpa":
        model.set_attn_implementation(attn)
    return model


def trimmed_prefill(arch: Arch, model: nn.Module, inputs: dict, device: torch.device) -> float:
    """One stock prefill with the tower stopped at the feature layer (the arch's own layout when it has options,
    which the runtime already trims)."""
    prune_for(arch, model, "none", 0.0)
    undos = [] if arch.options else trim_tower(model, adapter_for(model))
    try:
        return timed(lambda: model(**inputs, logits_to_keep=1), device)
    finally:
        for undo in reversed(undos):
            undo()
        if hasattr(model, ATTR):
            fastervlm.unprune(model)


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
    model = built(arch, scale, target, dtype)
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
