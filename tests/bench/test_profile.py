"""The prefill profile: every component labelled in every run, the floor fed what pruning leaves (no timing asserts)."""

from __future__ import annotations

import json

from fastervlm.bench.profile import RUNS
from fastervlm.cli import main

SMALLEST = 0.02  # one head per tower, full depth


def test_profile_labels_each_component_of_each_run(tmp_path):
    path, md = tmp_path / "profile.json", tmp_path / "profile.md"
    argv = ["bench", "profile", "--ratios", "0.95", "--scale", str(SMALLEST), "--repeats", "1", "--warmup", "0"]
    assert main([*argv, "--threads", "1", "--json", str(path), "--md", str(md)]) == 0
    payload = json.loads(path.read_text())
    out = payload["profiles"][0]
    assert payload["threads"] == 1 and out["visual_tokens"] == 29 and set(out["runs"]) == set(RUNS)
    pruned = out["runs"]["pruned"]["components_ms"]
    assert len([k for k in pruned if k.startswith("vision: layer")]) == 24
    assert len([k for k in pruned if k.startswith("llm: layer")]) == 32
    assert {"scoring", "selection", "projector", "lm head"} <= set(pruned)
    assert "scoring" not in out["runs"]["floor"]["components_ms"]
    assert all(r["total_ms"] > 0 for r in out["runs"].values())
    assert out["flops_t"]["pruned"] < out["flops_t"]["stock trimmed"] < out["flops_t"]["stock"]
    assert "| **total** |" in md.read_text() and payload["top_operators"]
