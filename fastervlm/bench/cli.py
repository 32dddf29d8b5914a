"""`fastervlm bench flops`: the argument parsing and the table; the counting lives in fastervlm.bench.flops."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from fastervlm.bench import batch_cli, profile_cli, serve_cli
from fastervlm.cli_args import METHOD_NAMES, Names, add_threads
from fastervlm.terminal import print_table

if TYPE_CHECKING:
    from fastervlm.bench.flops import FlopsRow
    from fastervlm.bench.latency import LatencyRow

# torch and the architectures load when a command runs, not for --help (see fastervlm.cli_args).
BENCH_ARCHS = Names("fastervlm.bench.archs", "ARCHS")
CONVENTIONS = Names("fastervlm.bench.flops", "CONVENTIONS")
DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes
TOKENS_HELP = "token budgets per view beside the ratios, e.g. 192,128,64 (the field's LLaVA-1.5 budgets)"


def comma_list(kind: type) -> callable:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None

    return parse


def add_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="FLOPs and KV cache of the full-size architectures")
    kinds = bench.add_subparsers(dest="bench", required=True)
    f = kinds.add_parser("flops", help="prefill FLOPs per component for each method x ratio")
    f.add_argument(
        "--arch", default="llava-1.5-7b", choices=BENCH_ARCHS, metavar="ARCH", help="%(choices)s (default %(default)s)"
    )
    f.add_argument(
        "--methods",
        type=comma_list(str),
        default=["none", "fastervlm", "fastv"],
        help="comma-separated; 'none' is the unpruned model, the others are method names",
    )
    f.add_argument("--ratios", type=comma_list(float), default=[0.25, 0.5, 0.75, 0.9, 0.95])
    f.add_argument("--tokens", type=comma_list(int), default=[], help=TOKENS_HELP)
    f.add_argument(
        "--convention",
        choices=CONVENTIONS,
        metavar="CONVENTION",
        default="counted",
        help="counted (default): every FLOP of the prefill; paper: LLM over visual tokens only, plus the vision tower",
    )
    f.add_argument(
        "--equal-budget",
        action="store_true",
        help="in-LLM methods (FastV) keep as many tokens as the per-view methods (the paper's tables)",
    )
    f.add_argument("--json", type=Path, help="write the rows as JSON")
    f.add_argument("--plot", type=Path, help="write a PNG of TFLOPs and visual KV cache against the ratio")
    add_threads(f)
    f.set_defaults(func=run_flops)

    lat = kinds.add_parser("latency", help="measured prefill / decode / generate time and memory, interleaved")
    lat.add_argument(
        "--arch", default="llava-1.5-7b", choices=BENCH_ARCHS, metavar="ARCH", help="%(choices)s (default %(default)s)"
    )
    lat.add_argument("--methods", type=comma_list(str), default=["none", "fastervlm", "fastv"])
    lat.add_argument("--ratios", type=comma_list(float), default=[0.5, 0.75, 0.9, 0.95])
    lat.add_argument("--tokens", type=comma_list(int), default=[], help=TOKENS_HELP)
    lat.add_argument("--clock", choices=profile_cli.CLOCKS, default="wall", help=profile_cli.CLOCK_HELP)
    lat.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    lat.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, float32 on cpu")
    lat.add_argument("--scale", type=float, default=1.0, help="every width x scale, depth kept (e.g. 0.125 on a CPU)")
    lat.add_argument("--batch", type=int, default=1)
    lat.add_argument("--new-tokens", type=int, default=16)
    lat.add_argument("--repeats", type=int, default=5)
    lat.add_argument("--warmup", type=int, default=1)
    lat.add_argument("--scoring", action="store_true", help="also time the [CLS] score: one row vs all maps")
    lat.add_argument("--json", type=Path, help="write the rows (and the hardware) as JSON")
    lat.add_argument("--plot", type=Path, help="write a PNG of measured and ideal speed-up against the ratio")
    add_threads(lat)
    lat.set_defaults(func=run_latency)
    profile_cli.add_parser(kinds)
    batch_cli.add_parser(kinds)
    serve_cli.add_parser(kinds)


def budget_cells(args: argparse.Namespace) -> list[tuple[str, float | int]]:
    """("none", 0.0) if asked, then each method at each ratio (float) and each token budget (int)."""
    if any(t < 0 for t in args.tokens):
        raise ValueError(f"--tokens must be token counts >= 0 per view, got {args.tokens}")
    cells = [("none", 0.0)] if "none" in args.methods else []
    return cells + [(m, b) for m in args.methods if m != "none" for b in [*args.ratios, *args.tokens]]


def budget_label(ratio: float, tokens: int | None) -> str:
    return f"{tokens} tok" if tokens is not None else f"{ratio:g}"


def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m != "none" and m not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from: none, {', '.join(METHOD_NAMES)}")


def run_flops(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fastervlm.bench.archs import arch
    from fastervlm.bench.flops import flops
    from fastervlm.bench.plot import ratio_plot

    check_methods(args.methods)
    target = arch(args.arch)
    cells = budget_cells(args)
    progress = tqdm(cells, desc=f"FLOPs of {args.arch}", unit="cell")
    rows = [flops(target, m, r, args.convention, equal=args.equal_budget) for m, r in progress]
    print_table(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    if args.plot:
        series = [("flops_t", f"prefill TFLOPs ({args.convention})"), ("kv_visual_mb", "visual KV cache, MB (fp16)")]
        print(f"plot written to {ratio_plot([r.as_dict() for r in rows], series, f'{args.arch}', args.plot)}")
    return 0


def run_latency(args: argparse.Namespace) -> int:
    import torch

    from fastervlm.bench.archs import arch
    from fastervlm.bench.latency import clock, latency, scoring_cost
    from fastervlm.bench.plot import ratio_plot

    check_methods(args.methods)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    cells = budget_cells(args)
    target = arch(args.arch)
    if args.scoring and target.score != "cls":
        raise ValueError(
            f"--scoring times the [CLS] row against eager maps; {args.arch} has no [CLS] token (fastervlm scores it "
            "by received attention): leave --scoring out"
        )
    options = {"device": args.device, "dtype": dtype, "scale": args.scale}
    with clock(args.clock):
        rows = latency(
            target,
            cells,
            batch=args.batch,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
            warmup=args.warmup,
            **options,
        )
        scoring = scoring_cost(target, repeats=args.repeats, **options) if args.scoring else None
    print_table(latency_table(rows))
    if scoring:
        print(
            f"[CLS] score: tower {scoring.tower_ms:.1f} ms; with the one-row probe {scoring.one_row_ms:.1f} ms; "
            f"eager with every attention map {scoring.all_maps_ms:.1f} ms"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": environment(args.device) | {"threads": torch.get_num_threads(), "clock": args.clock},
            "rows": [r.as_dict() for r in rows],
            "scoring": asdict(scoring) if scoring else None,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    if args.plot:
        series = [("speedup_measured", "measured prefill speed-up"), ("speedup_ideal", "ideal speed-up (FLOPs)")]
        title = f"{rows[0].arch} on {args.device}"
        print(f"plot written to {ratio_plot([r.as_dict() for r in rows], series, title, args.plot)}")
    return 0


def environment(device: str) -> dict:
    """What the numbers were measured on: they mean little without it."""
    import platform

    import torch
    import transformers

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def method_table(title: str, columns: tuple[str, ...]) -> Table:
    """A table with one row per method x ratio: the method column left-aligned and unwrapped, numbers right."""
    out = Table(title=title)
    for name in columns:
        out.add_column(name, justify="left" if name == "method" else "right", no_wrap=name == "method")
    return out


def latency_table(rows: list[LatencyRow]) -> Table:
    title = f"measured latency, {rows[0].arch} on {rows[0].device} ({rows[0].dtype}, batch {rows[0].batch})"
    columns = ("method", "budget", "visual tokens", "prefill ms", "IQR", "decode tok/s", "generate ms", "peak MB")
    out = method_table(title, (*columns, "speed-up", "ideal", "vs trimmed", "ideal trimmed"))
    for r in rows:
        out.add_row(
            r.method,
            budget_label(r.ratio, r.tokens),
            str(r.visual_tokens),
            f"{r.prefill_ms:.1f}",
            f"{r.prefill_iqr_ms:.1f}",
            f"{r.decode_tok_s:.1f}",
            f"{r.generate_ms:.0f}",
            "-" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.0f}",
            f"{r.speedup_measured:.2f}x",
            f"{r.speedup_ideal:.2f}x",
            f"{r.speedup_trimmed:.2f}x",
            f"{r.speedup_ideal_trimmed:.2f}x",
        )
    return out


def table(rows: list[FlopsRow]) -> Table:
    base = rows[0].flops_t if rows and rows[0].method == "none" else None
    title = f"prefill FLOPs ({rows[0].convention} convention), {rows[0].arch}" if rows else "FLOPs"
    columns = ("method", "budget", "visual tokens", "TFLOPs", "vision", "projector", "LLM", "KV visual MB", "vs none")
    out = method_table(title, columns)
    for r in rows:
        out.add_row(
            r.method,
            budget_label(r.ratio, r.tokens),
            str(r.visual_tokens),
            f"{r.flops_t:.2f}",
            f"{r.vision_t:.2f}",
            f"{r.projector_t:.3f}",
            f"{r.llm_t:.2f}",
            f"{r.kv_visual_mb:.1f}",
            f"{base / r.flops_t:.2f}x" if base else "-",
        )
    return out
