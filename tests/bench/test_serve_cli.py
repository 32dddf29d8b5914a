"""`fastervlm bench serve` without vLLM: a clear pointer to the serving venv (its real run: tests/serving)."""

from __future__ import annotations

import importlib.util

import pytest

from fastervlm.cli import main


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed: tests/serving runs it")
def test_bench_serve_without_vllm_names_the_serving_venv(capsys):
    assert main(["bench", "serve", "--requests", "2"]) == 2
    assert ".venv-vllm" in capsys.readouterr().err
