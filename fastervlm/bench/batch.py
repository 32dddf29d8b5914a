"""Throughput and memory at several batch sizes, with padding: the serving capacity that pruning buys.

Each sample of a batch gets its own prompt length (left padding, as generate pads), so the runtime's re-padding
is part of what is timed. Peak memory is the CUDA allocator's, or the process's peak RSS on a Linux CPU
(fastervlm.bench.memory). The largest batch that fits a memory budget comes from a straight line through the
measured peaks (fixed part: weights; slope: activations and KV cache per sample), an extrapolation said as such.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import fastervlm
from fastervlm.api import ATTR
from fastervlm.bench.archs import Arch
from fastervlm.bench.flops import Budget, budget_ratio, prune_for
from fastervlm.bench.latency import built, decode_steps, timed
from fastervlm.bench.memory import peak_mb, reset_peak
from fastervlm.models import adapter_for

PAD_STEP, PAD_SPAN = 5, 16  # sample b is shorter by (5 b) mod 16 tokens: ragged lengths, left-padded


@dataclass
class BatchRow:
    arch: str
    device: str
    dtype: str
    method: str
    ratio: float
    tokens: int | None
    batch: int
    prefill_ms: float  # median, the whole padded batch
    prefill_samples_s: float
    decode_tok_s: float  # generated tokens per second over the batch, one cached step at a time
    peak_mem_mb: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def ragged(inputs: dict[str, torch.Tensor], pad_id: int, visual_ids: list[int]) -> dict[str, torch.Tensor]:
    """Shift sample b right by (5 b) mod 16 columns behind left padding, dropping as many of its last tokens.

    The prompts end in plain text (the bench's prompts have 48 letters after the image), so every sample keeps
    its visual placeholders; a prompt whose dropped tail holds one is refused rather than cut.
    """
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    visual = torch.isin(ids, torch.tensor(visual_ids, device=ids.device))
    for b in range(ids.shape[0]):
        pad = (PAD_STEP * b) % PAD_SPAN
        if pad == 0:
            continue
        if bool(visual[b, -pad:].any()):
            raise ValueError(f"sample {b}'s last {pad} tokens hold visual placeholders; use a longer text tail")
        ids[b] = torch.cat([ids.new_full((pad,), pad_id), ids[b, :-pad]])
        mask[b] = torch.cat([mask.new_zeros(pad), mask[b, :-pad]])
    return {**inputs, "input_ids": ids, "attention_mask": mask}


def throughput(
    arch: Arch,
    cells: list[tuple[str, Budget]],
    batches: list[int],
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    new_tokens: int = 8,
    repeats: int = 3,
    warmup: int = 1,
) -> list[BatchRow]:
    """Rows per batch size (ascending) and cell; ("none", 0.0) is added first if missing."""
    if ("none", 0.0) not in cells:
        cells = [("none", 0.0), *cells]
    target = torch.device(device)
    model = built(arch, scale, target, dtype)
    adapter = adapter_for(model, **arch.options)
    visual_ids = [m.token_id for m in adapter.modalities(model)]
    pad_id = model.config.get_text_config().pad_token_id or 0
    rows = []
    steps = [(b, c) for b in sorted(batches) for c in cells]
    with torch.no_grad():
        for batch, (method, budget) in tqdm(steps, desc=f"batches {arch.scaled_name(scale)} on {device}"):
            inputs = {k: v.to(target) for k, v in arch.sample(batch).items()}
            inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
            inputs = ragged(inputs, pad_id, visual_ids)
            prune_for(arch, model, method, budget)
            try:
                prefill, decode = [], []
                reset_peak(target)
                for r in range(warmup + repeats):
                    first = timed(lambda inputs=inputs: model(**inputs, logits_to_keep=1), target)
                    loop = timed(decode_steps(model, inputs, new_tokens), target)
                    if r >= warmup:
                        prefill.append(first)
                        decode.append(loop)
                peak = peak_mb(target)
            finally:
                if hasattr(model, ATTR):
                    fastervlm.unprune(model)
            median = statistics.median(prefill)
            rows.append(
                BatchRow(
                    arch=arch.scaled_name(scale),
                    device=device,
                    dtype=str(dtype).removeprefix("torch."),
                    method=method,
                    ratio=budget_ratio(arch, budget),
                    tokens=budget if isinstance(budget, int) else None,
                    batch=batch,
                    prefill_ms=median,
                    prefill_samples_s=1000 * batch / median,
                    decode_tok_s=1000 * batch * new_tokens / statistics.median(decode),
                    peak_mem_mb=peak,
                )
            )
    return rows


def largest_batch(rows: list[BatchRow], budget_mb: float) -> dict[tuple[str, float, int | None], int | None]:
    """Per cell, the largest batch whose peak memory fits `budget_mb`, on the line through the measured peaks.

    None where fewer than two batch sizes were measured or memory was not measured. 0 when not even one fits.
    """
    out: dict[tuple[str, float, int | None], int | None] = {}
    for key in dict.fromkeys((r.method, r.ratio, r.tokens) for r in rows):
        points = [(r.batch, r.peak_mem_mb) for r in rows if (r.method, r.ratio, r.tokens) == key]
        if len({b for b, _ in points}) < 2 or any(m is None for _, m in points):
            out[key] = None
            continue
        slope, fixed = line(points)
        out[key] = max(0, int((budget_mb - fixed) // slope)) if slope > 0 else None
    return out


def line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of memory against batch size."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx
