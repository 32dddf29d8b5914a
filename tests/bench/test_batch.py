"""Batch throughput and memory: padded batches, the capacity line, the CLI's JSON (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch

from fastervlm.bench.archs import arch
from fastervlm.bench.batch import BatchRow, largest_batch, ragged
from fastervlm.cli import main
from fastervlm.tiny import tiny_llava_config

SMALLEST = 0.02


def test_ragged_pads_each_sample_on_the_left_and_keeps_its_image():
    inputs = arch("llava-1.5-7b").sample(4)
    image = tiny_llava_config().image_token_id
    out = ragged(inputs, pad_id=0, visual_ids=[image])
    assert out["attention_mask"].sum(dim=1).tolist() == [inputs["input_ids"].shape[1] - p for p in (0, 5, 10, 15)]
    assert out["attention_mask"][:, 0].tolist() == [1, 0, 0, 0] and bool(out["attention_mask"][:, -1].all())
    assert (out["input_ids"] == image).sum(dim=1).tolist() == [576] * 4
    assert torch.equal(out["input_ids"][1, 5:], inputs["input_ids"][1, :-5])  # shifted, not rewritten
    with pytest.raises(ValueError, match="visual placeholders"):
        ragged({**inputs, "input_ids": inputs["input_ids"].fill_(image)}, pad_id=0, visual_ids=[image])


def row(method: str, batch: int, peak: float | None) -> BatchRow:
    return BatchRow("a", "cpu", "float32", method, 0.0, None, batch, 1.0, 1.0, 1.0, peak)


def test_largest_batch_follows_the_line_through_the_measured_peaks():
    rows = [row("none", 1, 600.0), row("none", 8, 1300.0), row("fastervlm", 1, 550.0), row("fastervlm", 8, 690.0)]
    fits = largest_batch(rows, budget_mb=2000.0)
    assert fits[("none", 0.0, None)] == 15  # 500 + 100 b <= 2000
    assert fits[("fastervlm", 0.0, None)] == 73  # 530 + 20 b <= 2000
    assert largest_batch([row("none", 1, 600.0)], 2000.0)[("none", 0.0, None)] is None  # one point: no line


def test_cli_measures_each_batch_and_cell(tmp_path):
    path = tmp_path / "batch.json"
    argv = ["bench", "batch", "--batches", "1,2", "--ratios", "0.9", "--scale", str(SMALLEST), "--repeats", "1"]
    assert main([*argv, "--warmup", "0", "--new-tokens", "2", "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    cells = [(r["method"], r["batch"]) for r in payload["rows"]]
    assert cells == [("none", 1), ("fastervlm", 1), ("none", 2), ("fastervlm", 2)]
    assert all(r["prefill_samples_s"] > 0 and r["decode_tok_s"] > 0 and r["peak_mem_mb"] > 0 for r in payload["rows"])
    assert {c["method"] for c in payload["largest_batch"]} == {"none", "fastervlm"}
