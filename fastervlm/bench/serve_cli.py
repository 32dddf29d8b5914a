"""`fastervlm bench serve`: vLLM throughput and time to first token, pruned vs unpruned (in .venv-vllm)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fastervlm.terminal import print_table

if TYPE_CHECKING:
    from rich.table import Table

    from fastervlm.bench.serve import ServeRow


def add_parser(kinds: argparse._SubParsersAction) -> None:
    from fastervlm.bench.cli import TOKENS_HELP, comma_list  # the bench CLI imports this module

    p = kinds.add_parser("serve", help="vLLM throughput and time to first token under N concurrent requests")
    p.add_argument("--arch", default="llava-1.5-7b", choices=("llava-1.5-7b", "llava-1.5-13b"))
    p.add_argument("--checkpoint", type=Path, help="a saved LLaVA-1.5 to serve instead of a random --arch one")
    p.add_argument("--scale", type=float, default=1.0, help="every width x scale, depth kept (random weights)")
    p.add_argument("--methods", type=comma_list(str), default=["none", "fastervlm"])
    p.add_argument("--ratios", type=comma_list(float), default=[0.9])
    p.add_argument("--tokens", type=comma_list(int), default=[], help=TOKENS_HELP)
    p.add_argument("--requests", type=int, default=16, help="requests submitted at once")
    p.add_argument("--concurrency", type=int, default=8, help="requests the engine runs at a time (max_num_seqs)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--json", type=Path, help="write the rows and the hardware as JSON")
    p.set_defaults(func=run_serve)


def serve_table(rows: list[ServeRow]) -> Table:
    from fastervlm.bench.cli import budget_label, method_table

    title = f"vLLM serving, {rows[0].arch}: {rows[0].requests} requests, {rows[0].concurrency} at a time"
    columns = ("method", "budget", "visual tokens", "requests/s", "output tok/s", "TTFT mean ms", "TTFT max ms")
    out = method_table(title, columns)
    for r in rows:
        out.add_row(
            r.method,
            budget_label(r.ratio, r.tokens),
            str(r.visual_tokens),
            f"{r.requests_s:.2f}",
            f"{r.output_tok_s:.1f}",
            f"{r.ttft_ms_mean:.0f}",
            f"{r.ttft_ms_max:.0f}",
        )
    return out


def run_serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("bench serve needs vLLM: run it with .venv-vllm/bin/fastervlm (make vllm-env builds it)")
    for name in ("requests", "concurrency", "new_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    import vllm

    from fastervlm.bench.cli import budget_cells, check_methods, environment
    from fastervlm.bench.serve import save_checkpoint, serve_row
    from fastervlm.serving.plan import unservable_reason

    check_methods(args.methods)
    for method in (m for m in args.methods if m != "none"):
        reason = unservable_reason(method)
        if reason is not None:
            raise ValueError(f"method {method!r} cannot be served with vLLM: {reason}")
    cells = [
        (method, {} if method == "none" else {"tokens": b} if isinstance(b, int) else {"ratio": b})
        for method, b in budget_cells(args)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or save_checkpoint(args.arch, args.scale, Path(tmp))
        name = args.arch if args.checkpoint is None else str(args.checkpoint)
        label = name if args.scale == 1.0 or args.checkpoint else f"{name}@{args.scale:g}"
        rows = [
            serve_row(checkpoint, label, method, budget, args.requests, args.concurrency, args.new_tokens)
            for method, budget in cells
        ]
    print_table(serve_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": environment("cpu") | {"vllm": vllm.__version__}, "rows": [r.as_dict() for r in rows]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0
