"""`fastervlm bench serve` end to end on the tiny checkpoint: one row per server, the layout each laid out."""

from __future__ import annotations

import json

from tests.serving.conftest import require_vllm

require_vllm()

from fastervlm.budget import kept_count  # noqa: E402
from fastervlm.cli import main  # noqa: E402
from fastervlm.tiny import IMAGE_SEQ_LENGTH  # noqa: E402


def test_bench_serve_writes_one_row_per_server(checkpoint, tmp_path):
    out = tmp_path / "serve.json"
    args = ["bench", "serve", "--checkpoint", str(checkpoint), "--methods", "none,fastervlm", "--ratios", "0.9"]
    assert main([*args, "--requests", "2", "--concurrency", "2", "--new-tokens", "3", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    expected = [("none", IMAGE_SEQ_LENGTH), ("fastervlm", kept_count(IMAGE_SEQ_LENGTH, 0.9))]
    assert [(r["method"], r["visual_tokens"]) for r in rows] == expected
    assert all(r["requests"] == 2 and r["new_tokens"] == 3 and r["ttft_ms_max"] >= r["ttft_ms_p50"] > 0 for r in rows)
    assert payload["environment"]["vllm"]


def test_bench_serve_refuses_an_in_llm_method(checkpoint, capsys):
    assert main(["bench", "serve", "--checkpoint", str(checkpoint), "--methods", "fastv"]) == 2
    assert "cannot be served with vLLM" in capsys.readouterr().err
