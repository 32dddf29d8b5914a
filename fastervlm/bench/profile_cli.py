"""`fastervlm bench profile`: per-component prefill time, unpruned and pruned, against the floor; JSON + Markdown."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastervlm.cli_args import Names, add_threads

# Single-view [CLS]-scored architectures only; torch and the architectures load when a command runs (see
# fastervlm.cli_args).
SINGLE_VIEW_ARCHS = Names("fastervlm.bench.archs", "ARCHS", where=lambda arch: arch.views == 1 and arch.score == "cls")

CLOCKS = ("cpu", "wall")  # fastervlm.bench.latency.CLOCKS, named here so that --help needs no torch
CLOCK_HELP = "wall: elapsed time; cpu: this process's CPU time (steadier on a shared CPU machine; CPU only)"
GROUPS = (
    ("vision tower: embeddings and glue", ("vision: embeddings and glue",)),
    ("vision tower: layers", ("vision: layer",)),
    ("[CLS] scoring", ("scoring",)),
    ("selection", ("selection",)),
    ("projector", ("projector",)),
    ("LLM: embeddings", ("llm: embeddings",)),
    ("LLM: layers", ("llm: layer",)),
    ("LLM: rotary, masks, norm", ("llm: rotary, masks, norm",)),
    ("LM head (last position)", ("lm head",)),
    ("rest of the call (model glue + runtime)", ("rest of the call",)),
)


def add_parser(kinds: argparse._SubParsersAction) -> None:
    from fastervlm.bench.cli import DTYPES, comma_list  # the bench CLI imports this module

    p = kinds.add_parser("profile", help="where each prefill millisecond goes, unpruned / pruned / floor")
    p.add_argument(
        "--arch",
        default="llava-1.5-7b",
        choices=SINGLE_VIEW_ARCHS,
        metavar="ARCH",
        help="%(choices)s (default %(default)s)",
    )
    p.add_argument("--method", default="fastervlm")
    p.add_argument("--ratios", type=comma_list(float), default=[0.9, 0.95])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--scale", type=float, default=1.0, help="every width x scale, depth kept")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--clock", choices=CLOCKS, default="wall", help=CLOCK_HELP)
    add_threads(p)
    p.add_argument("--json", type=Path, help="write the profile as JSON")
    p.add_argument("--md", type=Path, help="write the summary tables as Markdown")
    p.set_defaults(func=run_profile)


def grouped(components: dict[str, float]) -> dict[str, float]:
    return {
        name: sum(ms for label, ms in components.items() if label.startswith(prefixes)) for name, prefixes in GROUPS
    }


def markdown(payload: dict) -> str:
    from fastervlm.bench.profile import RUNS

    env = payload["environment"]
    lines = [
        f"# Prefill profile, {payload['profiles'][0]['arch']} on {env['cpu']} "
        f"({env['torch']}, {payload['threads']} threads, {payload['clock']} clock, batch 1)",
        "",
        "Exclusive milliseconds per component (medians over interleaved repeats; `fastervlm bench profile`). "
        "`stock trimmed`: the stock model with its vision tower stopped at the feature layer. `floor`: the stock "
        "modules fed what pruning leaves (trimmed tower, projector on kept rows, stock model on the short sequence).",
    ]
    for p in payload["profiles"]:
        runs = p["runs"]
        lines += ["", f"## {p['method']} at {p['ratio']:g} ({p['visual_tokens']} visual tokens)", ""]
        lines += ["| component | " + " | ".join(RUNS) + " |", "| --- |" + " ---: |" * len(RUNS)]
        groups = {name: grouped(runs[name]["components_ms"]) for name in RUNS}
        for name, _ in GROUPS:
            lines.append(f"| {name} | " + " | ".join(f"{groups[r][name]:.1f}" for r in RUNS) + " |")
        lines.append("| **total** | " + " | ".join(f"**{runs[r]['total_ms']:.1f}**" for r in RUNS) + " |")
        lines += ["", *rates(p), "", *speedups(p)]
    ops = payload.get("top_operators") or []
    if ops:
        lines += ["", "## Top operators of one pruned prefill (torch.profiler, self CPU time)", ""]
        lines += ["| operator | calls | self ms |", "| --- | ---: | ---: |"]
        lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.1f} |" for o in ops]
    return "\n".join(lines) + "\n"


def rates(p: dict) -> list[str]:
    """Each component's achieved GFLOP/s per run: an ideal speed-up assumes a run keeps the stock model's rate."""
    from fastervlm.bench.profile import RUNS

    runs, parts = p["runs"], p["component_flops_t"]
    times = {r: grouped(runs[r]["components_ms"]) for r in RUNS}
    ms = {
        "vision tower": lambda g: g["vision tower: embeddings and glue"] + g["vision tower: layers"],
        "projector": lambda g: g["projector"],
        "LLM": lambda g: g["LLM: embeddings"] + g["LLM: layers"] + g["LLM: rotary, masks, norm"],
        "LM head": lambda g: g["LM head (last position)"],
    }
    lines = ["| GFLOP/s (counted FLOPs / time) | " + " | ".join(RUNS) + " |", "| --- |" + " ---: |" * len(RUNS)]
    for name, of in ms.items():
        cells = [f"{1e6 * parts[r][name] / of(times[r]):.1f}" if of(times[r]) > 0 else "-" for r in RUNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def speedups(p: dict) -> list[str]:
    runs, f = p["runs"], p["flops_t"]
    stock, trimmed = runs["stock"]["total_ms"], runs["stock trimmed"]["total_ms"]
    pruned, floor = runs["pruned"]["total_ms"], runs["floor"]["total_ms"]
    ideal, ideal_trimmed = f["stock"] / f["pruned"], f["stock trimmed"] / f["pruned"]
    return [
        f"- over stock: measured {stock / pruned:.2f}x, ideal (FLOPs) {ideal:.2f}x, "
        f"**{stock / pruned / ideal:.2f} of ideal**; the floor: {stock / floor:.2f}x, "
        f"{stock / floor / ideal:.2f} of ideal",
        f"- over the trimmed stock (the same exact cuts on both sides): measured {trimmed / pruned:.2f}x, ideal "
        f"{ideal_trimmed:.2f}x, **{trimmed / pruned / ideal_trimmed:.2f} of ideal**",
        f"- runtime overhead (pruned - floor): {p['runtime_overhead_ms']:.1f} ms, "
        f"{100 * p['runtime_overhead_fraction']:.1f} % of the pruned prefill",
    ]


def run_profile(args: argparse.Namespace) -> int:
    import torch

    from fastervlm.bench.archs import arch
    from fastervlm.bench.cli import environment
    from fastervlm.bench.latency import clock
    from fastervlm.bench.profile import profile, top_operators

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    target = arch(args.arch)
    options = {"device": args.device, "dtype": dtype, "scale": args.scale}
    with clock(args.clock):
        profiles = [
            profile(target, args.method, r, repeats=args.repeats, warmup=args.warmup, **options) for r in args.ratios
        ]
    ops = top_operators(target, args.method, args.ratios[-1], scale=args.scale) if args.device == "cpu" else []
    payload = {
        "environment": environment(args.device),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "profiles": profiles,
        "top_operators": ops,
    }
    text = markdown(payload)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0
