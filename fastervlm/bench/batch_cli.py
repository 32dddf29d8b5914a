"""`fastervlm bench batch`: prefill / decode throughput and peak memory at batch 1 / 8 / 32, pruned vs unpruned."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastervlm.bench.profile_cli import CLOCK_HELP, CLOCKS
from fastervlm.cli_args import add_threads
from fastervlm.terminal import print_table

if TYPE_CHECKING:
    import torch
    from rich.table import Table

    from fastervlm.bench.batch import BatchRow


def add_parser(kinds: argparse._SubParsersAction) -> None:
    from fastervlm.bench.cli import BENCH_ARCHS, DTYPES, TOKENS_HELP, comma_list  # the bench CLI imports this module

    p = kinds.add_parser("batch", help="throughput and peak memory at several batch sizes, with padding")
    p.add_argument(
        "--arch", default="llava-1.5-7b", choices=BENCH_ARCHS, metavar="ARCH", help="%(choices)s (default %(default)s)"
    )
    p.add_argument("--methods", type=comma_list(str), default=["none", "fastervlm"])
    p.add_argument("--ratios", type=comma_list(float), default=[0.9])
    p.add_argument("--tokens", type=comma_list(int), default=[], help=TOKENS_HELP)
    p.add_argument("--batches", type=comma_list(int), default=[1, 8, 32])
    p.add_argument("--memory-budget-gb", type=float, default=16.0, help="for the largest batch that fits")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--scale", type=float, default=1.0, help="every width x scale, depth kept")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--clock", choices=CLOCKS, default="wall", help=CLOCK_HELP)
    add_threads(p)
    p.add_argument("--json", type=Path, help="write the rows, the capacities and the hardware as JSON")
    p.set_defaults(func=run_batch)


def batch_table(rows: list[BatchRow], capacity: dict, budget_gb: float) -> Table:
    from fastervlm.bench.cli import budget_label, method_table

    title = f"throughput and memory, {rows[0].arch} on {rows[0].device} ({rows[0].dtype}, padded batches)"
    columns = ("method", "budget", "batch", "prefill ms", "prefill samples/s", "decode tok/s", "peak MB")
    out = method_table(title, (*columns, f"max batch in {budget_gb:g} GB"))
    for r in rows:
        fits = capacity[(r.method, r.ratio, r.tokens)]
        out.add_row(
            r.method,
            budget_label(r.ratio, r.tokens),
            str(r.batch),
            f"{r.prefill_ms:.0f}",
            f"{r.prefill_samples_s:.2f}",
            f"{r.decode_tok_s:.1f}",
            "-" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.0f}",
            "-" if fits is None else str(fits),
        )
    return out


def run_batch(args: argparse.Namespace) -> int:
    import torch

    from fastervlm.bench.batch import largest_batch
    from fastervlm.bench.cli import environment
    from fastervlm.bench.latency import clock

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu")
    if not args.batches or min(args.batches) < 1:
        raise ValueError(f"--batches must be batch sizes >= 1, got {args.batches}")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    with clock(args.clock):
        rows = run_throughput(args, dtype)
    capacity = largest_batch(rows, args.memory_budget_gb * 1024)
    print_table(batch_table(rows, capacity, args.memory_budget_gb))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": environment(args.device) | {"threads": torch.get_num_threads(), "clock": args.clock},
            "memory_budget_gb": args.memory_budget_gb,
            "rows": [r.as_dict() for r in rows],
            "largest_batch": [{"method": m, "ratio": r, "tokens": t, "batch": b} for (m, r, t), b in capacity.items()],
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0


def run_throughput(args: argparse.Namespace, dtype: torch.dtype) -> list[BatchRow]:
    from fastervlm.bench.archs import arch
    from fastervlm.bench.batch import throughput
    from fastervlm.bench.cli import budget_cells

    return throughput(
        arch(args.arch),
        budget_cells(args),
        args.batches,
        device=args.device,
        dtype=dtype,
        scale=args.scale,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        warmup=args.warmup,
    )
