"""benchmarks/gpu.sh end to end on the CPU at the smallest width: install check, driver, JSON with the hardware."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_on_cpu(tmp_path):
    flags = "--archs llava-1.5-7b --methods fastervlm --ratios 0.95 --new-tokens 2 --repeats 1 --warmup 0"
    env = os.environ | {
        "PYTHON": sys.executable,
        "GPU_BENCH_DEVICE": "cpu",
        "GPU_BENCH_SCALE": "0.02",
        "GPU_BENCH_ARGS": f"{flags} --out {tmp_path}",
    }
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== benchmark: device cpu, scale 0.02" in done.stdout
    (path,) = tmp_path.glob("gpu_*_scale0.02.json")
    payload = json.loads(path.read_text())
    assert payload["environment"]["hardware"] and payload["environment"]["attn"] == ["sdpa"]
    rows = payload["rows"]
    assert [(r["method"], r["visual_tokens"], r["attn"]) for r in rows] == [
        ("none", 576, "sdpa"),
        ("fastervlm", 29, "sdpa"),
    ]
    assert all(r["prefill_ms"] > 0 and r["decode_tok_s"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
