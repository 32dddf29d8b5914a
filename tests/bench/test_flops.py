"""FLOP counting: token counts from the real runtime on the twin, FLOPs from the full-size fake modules."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from fastervlm.bench.archs import arch
from fastervlm.bench.flops import flops, token_plan
from fastervlm.cli import main
from fastervlm.data import paper_table

D, M, L = 4096, 11008, 32  # Vicuna-7B


def paper_formula(visual_per_layer: list[int]) -> float:
    return sum(8 * n * D * D + 4 * n * n * D + 6 * n * D * M for n in visual_per_layer) / 1e12


@pytest.fixture(scope="module")
def llava7b():
    return arch("llava-1.5-7b")


def test_twin_token_plans(llava7b):
    assert token_plan(llava7b, "none", 0.0).visual == [576] * L
    assert token_plan(llava7b, "fastervlm", 0.9).visual == [58] * L
    assert token_plan(llava7b, "fastv", 0.9).visual == [576, 576] + [58] * (L - 2)
    assert token_plan(llava7b, "fastv", 0.9).projected == 576
    assert token_plan(llava7b, "fastervlm", 0.95).projected == 29


def test_staged_in_llm_methods_count_each_layer_at_its_own_length(llava7b):
    """DART cuts once at layer 2, PyramidDrop before 8 / 16 / 24 (lambda 0.544 at 50 %), FitPrune after every layer
    its interpolated fitted schedule names (mean 58 per layer at 90 %); the paper convention sums them per layer."""
    assert token_plan(llava7b, "dart", 0.9).visual == [576, 576] + [60] * (L - 2)
    pyramid = token_plan(llava7b, "pyramiddrop", 0.5).visual
    assert pyramid == [576] * 8 + [313] * 8 + [170] * 8 + [92] * 8
    assert flops(llava7b, "pyramiddrop", 0.5, "paper").llm_t == pytest.approx(paper_formula(pyramid))
    fit = token_plan(llava7b, "fitprune", 0.9).visual
    assert fit[0] == 576 and fit == sorted(fit, reverse=True)
    assert (sum(fit[1:]) + fit[-1]) / L == pytest.approx(58, abs=0.5)  # what remains after each layer, mean


def test_paper_convention_is_the_papers_formula_plus_the_tower(llava7b):
    unpruned = flops(llava7b, "none", 0.0, "paper")
    fastv = flops(llava7b, "fastv", 0.95, "paper")
    assert unpruned.llm_t == pytest.approx(paper_formula([576] * L))
    assert fastv.llm_t == pytest.approx(paper_formula([576, 576] + [29] * (L - 2)))
    # CLIP ViT-L/14-336, one view of 577 tokens: 24 x (8nd^2 + 4n^2 d + 4ndm), d=1024, m=4096 (two MLP matrices).
    n, d, m = 577, 1024, 4096
    assert unpruned.vision_t == pytest.approx(24 * (8 * n * d * d + 4 * n * n * d + 4 * n * d * m) / 1e12, rel=0.01)
    assert unpruned.kv_visual_mb == pytest.approx(576 * 0.5)  # 0.5 MB per token for a 7B LLaMA in fp16


def test_counted_llm_equals_the_formula_over_every_token(llava7b):
    """Eager attention on the fake modules: the counter sees q/k/v/o, both attention matmuls and the MLP."""
    row = flops(llava7b, "fastervlm", 0.75, "counted")
    plan = token_plan(llava7b, "fastervlm", 0.75)
    assert row.llm_t == pytest.approx(paper_formula(plan.lengths), rel=1e-6)
    assert row.projector_t == pytest.approx(2 * 144 * (1024 * D + D * D) / 1e12, rel=1e-6)
    assert row.lm_head_t == pytest.approx(2 * D * 32064 / 1e12)
    # The stock tower runs all 24 layers; the pruned one stops at the feature layer (-2): one layer fewer.
    stock = flops(llava7b, "none", 0.0, "counted")
    assert stock.vision_cut_t == pytest.approx(stock.vision_t / 24, rel=0.01)
    assert row.vision_t == pytest.approx(stock.vision_t - stock.vision_cut_t)


def test_cli_writes_json_and_plot(tmp_path):
    path, png = tmp_path / "flops.json", tmp_path / "flops.png"
    argv = ["bench", "flops", "--methods", "none,fastervlm", "--ratios", "0.9", "--json", str(path), "--plot", str(png)]
    code = main(argv)
    with Image.open(png) as picture:  # two panels: TFLOPs and visual KV cache
        assert picture.size == ((11 * 120), (4 * 120))
    rows = json.loads(path.read_text())
    assert code == 0 and [(r["method"], r["visual_tokens"]) for r in rows] == [("none", 576), ("fastervlm", 58)]
    assert {"arch", "method", "ratio", "visual_tokens", "flops_t", "kv_visual_mb"} <= set(rows[0])
    assert rows[1]["flops_t"] < rows[0]["flops_t"] / 3


def test_cli_rejects_unknown_method(capsys):
    assert main(["bench", "flops", "--methods", "none,zip"]) == 2
    assert "unknown method(s) ['zip']" in capsys.readouterr().err


PAPER_NAMES = {"none": "LLaVA-NeXT-7B", "fastervlm": "FasterVLM (sdpa)", "fastv": "FastV"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fastervlm", "fastv"])
def test_reproduces_the_papers_flops_column_for_llava_next(method):
    """The paper's efficiency table (carried as fastervlm/data/paper): within 0.05 T at every ratio, and KV MB."""
    table = paper_table("fastervlm_efficiency_llava_next_7b")
    rows = {(r["method"], int(r["reduction_pct"])): r for r in table}
    next7b = arch("llava-next-7b")
    unpruned = flops(next7b, "none", 0.0, "paper")
    assert (
        unpruned.visual_tokens == 2880 and abs(unpruned.flops_t - float(rows[("LLaVA-NeXT-7B", 0)]["flops_t"])) < 0.05
    )
    for pct in (25, 50, 75, 90, 95):
        row = flops(next7b, method, pct / 100, "paper", equal=True)
        paper = rows[(PAPER_NAMES[method], pct)]
        assert row.visual_tokens == int(paper["visual_tokens"])
        assert abs(row.flops_t - float(paper["flops_t"])) < 0.05, (pct, row.flops_t, paper["flops_t"])
        assert row.kv_visual_mb == pytest.approx(float(paper["kv_storage_mb"]), rel=0.01)
