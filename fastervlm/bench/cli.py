"""`fastervlm bench flops`: the argument parsing and the table; the counting lives in fastervlm.bench.flops."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from fastervlm.bench.archs import ARCHS, arch
from fastervlm.bench.flops import CONVENTIONS, FlopsRow, flops
from fastervlm.methods import METHODS


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
    f.add_argument("--arch", default="llava-1.5-7b", choices=sorted(ARCHS))
    f.add_argument(
        "--methods",
        type=comma_list(str),
        default=["none", "fastervlm", "fastv"],
        help=f"comma-separated; 'none' is the unpruned model; known: {', '.join(sorted(METHODS))}",
    )
    f.add_argument("--ratios", type=comma_list(float), default=[0.25, 0.5, 0.75, 0.9, 0.95])
    f.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="counted",
        help="counted: every FLOP of the prefill; paper: LLM over visual tokens only, plus the vision tower",
    )
    f.add_argument("--json", type=Path, help="write the rows as JSON")
    f.set_defaults(func=run_flops)


def run_flops(args: argparse.Namespace) -> int:
    unknown = [m for m in args.methods if m != "none" and m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from: none, {', '.join(sorted(METHODS))}")
    target = arch(args.arch)
    cells = [("none", 0.0)] if "none" in args.methods else []
    cells += [(m, r) for m in args.methods if m != "none" for r in args.ratios]
    rows = [flops(target, m, r, args.convention) for m, r in tqdm(cells, desc=f"FLOPs of {args.arch}", unit="cell")]
    Console().print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0


def table(rows: list[FlopsRow]) -> Table:
    base = rows[0].flops_t if rows and rows[0].method == "none" else None
    out = Table(title=f"prefill FLOPs ({rows[0].convention} convention), {rows[0].arch}" if rows else "FLOPs")
    for name in ("method", "ratio", "visual tokens", "TFLOPs", "vision", "projector", "LLM", "KV visual MB", "vs none"):
        out.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        out.add_row(
            r.method,
            f"{r.ratio:g}",
            str(r.visual_tokens),
            f"{r.flops_t:.2f}",
            f"{r.vision_t:.2f}",
            f"{r.projector_t:.3f}",
            f"{r.llm_t:.2f}",
            f"{r.kv_visual_mb:.1f}",
            f"{base / r.flops_t:.2f}x" if base else "-",
        )
    return out
