"""`fastervlm plot`: one figure per model, a panel per benchmark and average, one line per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from fastervlm.data import paper_table
from fastervlm.eval.paper import load_paper
from fastervlm.eval.plot import score_figures
from fastervlm.eval.results import Cell, read_results
from fastervlm.eval.table import build_table
from tests.eval.synthetic import BASE, RATIOS, put, run, scores


def labels(figure: Figure) -> list[list[str]]:
    return [[line.get_label() for line in axis.lines] for axis in figure.axes if axis.get_visible()]


@pytest.fixture
def figures(results: Path):
    made = score_figures(build_table(read_results(results)))
    yield made
    for figure in made.values():
        plt.close(figure)


def test_one_line_per_method(figures):
    assert list(figures) == ["llava", "other"]
    panels = labels(figures["llava"])
    titles = [axis.get_title() for axis in figures["llava"].axes if axis.get_visible()]
    assert titles == ["GQA", "POPE", "MME", "Avg."]
    ranked = ["fastervlm", "fastv", "random", "alpha", "zeta"]
    assert panels == [[*ranked, "unpruned"]] * 4  # the token-budget row has no x and is not drawn
    gqa = figures["llava"].axes[0]
    fastv = next(line for line in gqa.lines if line.get_label() == "fastv")
    assert list(fastv.get_xdata()) == [50.0, 90.0]
    assert list(fastv.get_ydata()) == [scores("fastv", r)["gqa"] for r in sorted(RATIOS)]
    unpruned = gqa.lines[-1]
    assert unpruned.get_linestyle() == "--" and list(unpruned.get_ydata()) == [BASE["gqa"]] * 2
    assert labels(figures["other"]) == [["fastervlm"], [], [], []]  # no unpruned cell: no baseline, no average


def test_paper_overlay(results: Path):
    table = build_table(read_results(results), paper=load_paper("llava15_7b"), model="llava")
    figure = score_figures(table)["llava"]
    pope = figure.axes[1]
    paper = {line.get_label(): line for line in pope.lines if line.get_label().endswith("(paper)")}
    assert sorted(paper) == ["fastervlm (paper)", "fastv (paper)", "unpruned (paper)"]
    published = [r for r in paper_table("fastervlm_llava15_7b") if r["method"] == "FastV"]
    assert list(paper["fastv (paper)"].get_xdata()) == [float(r["reduction_pct"]) for r in published]
    assert list(paper["fastv (paper)"].get_ydata()) == [float(r["pope"]) for r in published]
    assert paper["fastv (paper)"].get_linestyle() == ":" and paper["fastv (paper)"].get_markerfacecolor() == "none"
    plt.close(figure)


def test_cli_writes_png_and_pdf(results: Path, tmp_path: Path, capsys):
    put(results, Cell("llava:7b", "none", ratio=0.0), {"gqa": 1.0})  # ":" is unsafe in a file name
    assert run("plot", str(results), "--model", "llava:7b") == 0
    written = sorted((results / "plots").iterdir())
    assert [p.name for p in written] == ["scores_llava_7b.pdf", "scores_llava_7b.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert written[0].read_bytes().startswith(b"%PDF") and written[1].read_bytes().startswith(b"\x89PNG")
    assert run("plot", str(results), "--out", str(tmp_path / "fig" / "x"), "--model", "llava") == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["x_llava.pdf", "x_llava.png"]
    assert "token budget" in capsys.readouterr().out


def test_plot_errors(results: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="--paper; choose one of"):
        run("plot", str(results), "--paper", "llava-1.5-7b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run("plot", str(tmp_path / "missing"))
