"""The newer families' bench archs: their twins prune through the real runtime at the real geometry."""

from __future__ import annotations

import pytest

from fastervlm.bench.archs import arch
from fastervlm.bench.flops import kv_width, token_plan
from fastervlm.cli import main


def test_qwen2_5_vl_7b_twin_token_plans():
    """672 x 672 px: 48 x 48 patches, 576 merged tokens, pruned before the LLM or from FastV's layer 2 on."""
    qwen = arch("qwen2.5-vl-7b")
    layers = qwen.text["num_hidden_layers"]
    assert token_plan(qwen, "fastervlm", 0.9).visual == [58] * layers
    assert token_plan(qwen, "fastv", 0.9).visual == [576, 576] + [58] * (layers - 2)


def test_grouped_query_kv_cache_width():
    """Qwen2.5-VL-7B caches 4 of its 28 heads (128 wide) per token and layer."""
    qwen = arch("qwen2.5-vl-7b")
    assert kv_width(qwen.make_config(qwen.vision, qwen.text).text_config) == 4 * 128


def test_scoring_needs_a_cls_token(capsys):
    assert main(["bench", "latency", "--arch", "qwen3-vl-8b", "--scoring"]) == 2
    assert "has no [CLS] token" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "visual"), [("qwen3-vl-8b", 576), ("onevision-7b", 729 + 54 * 54 + 54)])
def test_benchmark_samples_hold_the_documented_visual_tokens(name, visual):
    """The stock processors' counts for the benchmark image (fastervlm.bench.families' docstring)."""
    target = arch(name)
    model_config = target.make_config(target.vision, target.text)
    inputs = target.sample(1)
    assert int((inputs["input_ids"] == model_config.image_token_id).sum()) == visual
