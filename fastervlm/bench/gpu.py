"""The driver of `bash benchmarks/gpu.sh`: the paper's models at full size, random weights, one JSON per run.

LLaVA-1.5-7B and LLaVA-NeXT-7B (the paper's layout: 5 views x 576 = 2880 visual tokens), bf16, every attention
implementation that imports (sdpa; flash_attention_2 when flash-attn is installed), unpruned and each method at
each ratio: time to first token, decode tokens/s, peak memory, with the ideal (FLOPs) speed-up beside them.
`--device cpu --scale 0.02` runs the same path on any machine in a minute (how the script is tested).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import torch

from fastervlm.bench.archs import arch
from fastervlm.bench.latency import latency
from fastervlm.terminal import print_table

ARCHS = ["llava-1.5-7b", "llava-next-7b"]
METHODS = ["fastervlm", "fastv", "sparsevlm"]
RATIOS = [0.75, 0.9, 0.95]


def comma(kind: type) -> callable:
    return lambda text: [kind(part) for part in text.split(",") if part]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastervlm.bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--scale", type=float, default=1.0, help="every width x scale, depth kept (1 = the real models)")
    p.add_argument("--archs", type=comma(str), default=ARCHS)
    p.add_argument("--methods", type=comma(str), default=METHODS)
    p.add_argument("--ratios", type=comma(float), default=RATIOS)
    p.add_argument("--attn", type=comma(str), default=None, help="default: sdpa, and flash_attention_2 if installed")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return p


def attn_implementations(device: str) -> list[str]:
    """sdpa always; flash_attention_2 on CUDA when the flash_attn package imports (gpu.sh tries to install it)."""
    found = ["sdpa"]
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        found.append("flash_attention_2")
    return found


def hardware(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    from fastervlm.bench.cli import environment, latency_table

    args = parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: torch.cuda.is_available() is False (run with --device cpu to test the path)")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    attns = args.attn or attn_implementations(args.device)
    cells = [("none", 0.0)] + [(m, r) for m in args.methods for r in args.ratios]
    start, rows = time.monotonic(), []
    for name in args.archs:
        for attn in attns:
            print(f"[{time.monotonic() - start:5.0f} s] {name} (scale {args.scale:g}), {attn}, {len(cells)} cells")
            found = latency(
                arch(name),
                cells,
                device=args.device,
                dtype=dtype,
                scale=args.scale,
                new_tokens=args.new_tokens,
                repeats=args.repeats,
                warmup=args.warmup,
                attn=attn,
            )
            print_table(latency_table(found))
            rows += found
            if args.device == "cuda":
                torch.cuda.empty_cache()
    where = hardware(args.device)
    suffix = "" if args.scale == 1.0 else f"_scale{args.scale:g}"
    path = args.out / f"gpu_{slug(where)}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": environment(args.device) | {"hardware": where, "attn": attns},
        "seconds": time.monotonic() - start,
        "rows": [r.as_dict() for r in rows],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"[{payload['seconds']:5.0f} s] wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
