"""Latency: the measuring loop and its JSON, on the smallest width (timings themselves are not asserted)."""

from __future__ import annotations

import json

from fastervlm.bench.archs import arch
from fastervlm.bench.latency import latency, scoring_cost
from fastervlm.cli import main

SMALLEST = 0.02  # one head per tower: widths 64 (vision) and 128 (LLM), full depth


def test_rows_cover_every_cell_with_the_real_token_counts():
    """A float budget is a ratio, an int the field's token budget per view (FastV given 144 = 0.75 of 576)."""
    cells = [("fastervlm", 0.9), ("fastv", 144)]
    rows = latency(arch("llava-1.5-7b"), cells, scale=SMALLEST, new_tokens=2, repeats=1, warmup=0)
    assert [(r.method, r.ratio, r.tokens, r.visual_tokens) for r in rows] == [
        ("none", 0.0, None, 576),
        ("fastervlm", 0.9, None, 58),
        ("fastv", 0.75, 144, 144),
    ]
    assert rows[0].speedup_measured == 1.0 and rows[0].speedup_ideal == 1.0
    assert rows[1].speedup_ideal > rows[2].speedup_ideal > 1.0
    # Against the stock model with the same exact cut (tower stopped at the feature layer) the ideal is smaller.
    assert rows[0].speedup_ideal_trimmed < 1.0 and 1.0 < rows[1].speedup_ideal_trimmed < rows[1].speedup_ideal
    assert all(r.prefill_ms > 0 and r.decode_tok_s > 0 and r.generate_ms > 0 and r.speedup_trimmed > 0 for r in rows)
    assert all(r.peak_mem_mb > 0 for r in rows)  # Linux CPU: the process's peak RSS


def test_scoring_cost_times_three_ways():
    cost = scoring_cost(arch("llava-1.5-7b"), scale=SMALLEST, repeats=1)
    assert cost.views == 1 and min(cost.tower_ms, cost.one_row_ms, cost.all_maps_ms) > 0


def test_cli_json_names_the_hardware(tmp_path):
    path = tmp_path / "latency.json"
    argv = ["bench", "latency", "--methods", "none,fastervlm", "--ratios", "0.95", "--scale", str(SMALLEST)]
    argv += ["--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--json", str(path)]
    assert main(argv) == 0
    payload = json.loads(path.read_text())
    assert {"torch", "transformers", "cpu", "date"} <= set(payload["environment"])
    required = {"arch", "device", "method", "ratio", "visual_tokens", "prefill_ms", "decode_tok_s", "peak_mem_mb"}
    assert required | {"speedup_measured", "speedup_ideal"} <= set(payload["rows"][0])
    assert payload["rows"][1]["visual_tokens"] == 29
