"""Score against the reduction ratio, one panel per benchmark plus the relative average, one line per method.

Built from the same Table as `fastervlm table`, so the averages plotted are the ones printed. Rows with a token
budget instead of a ratio have no x position and are left out.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastervlm.eval.benchmarks import BENCHMARKS
from fastervlm.eval.paper import PaperTable
from fastervlm.eval.results import UNPRUNED
from fastervlm.eval.table import AVERAGES, Row, Table, average_of
from fastervlm.methods import METHODS

COLUMNS = 4


def score_figures(table: Table) -> dict[str, Figure]:
    """One figure per model; with table.paper, the paper's lines dotted with hollow markers in the same colour."""
    return {model: _figure(table, model) for model in table.models()}


def _figure(table: Table, model: str) -> Figure:
    panels = [*table.benchmarks, *table.averages]
    ncols = min(COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    rows = [r for r in table.rows if r.model == model and r.run]  # the paper's own rows come from table.paper
    base = next((r for r in rows if r.unpruned), None)
    methods = list(dict.fromkeys(r.method for r in rows if not r.unpruned and r.reduction_pct is not None))
    for axis, key in zip(axes.flat, panels, strict=False):
        for method in methods:
            points = [(r.reduction_pct, _value(r, key)) for r in rows if r.method == method]
            _line(axis, [(x, y) for x, y in points if x is not None and y is not None], method)
        if base is not None and _value(base, key) is not None:
            axis.axhline(_value(base, key), linestyle="--", color="grey", label="unpruned")
        if table.paper is not None:
            scored = [k for k in table.benchmarks if average_of(k) == key and any(k in r.scores for r in rows)]
            _paper_lines(axis, table.paper, methods, key, scored)
        axis.set_title(AVERAGES.get(key) or (BENCHMARKS[key].title if key in BENCHMARKS else key))
        axis.set_xlabel("reduction (% of visual tokens removed)")
        axis.set_ylabel("% of unpruned" if key in AVERAGES else "score")
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    legend = {
        label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
    }
    ncol = max(1, min(len(legend), 4))
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=ncol, frameon=False)
    title = model if table.paper is None else f"{model} (dotted: {table.paper.name})"
    figure.suptitle(title)
    width, height = figure.get_size_inches()
    below = 0.35 + 0.25 * math.ceil(len(legend) / ncol)  # inches for the legend, under the x labels
    figure.set_size_inches(width, height + below)
    figure.tight_layout(rect=(0, below / (height + below), 1, 1))
    return figure


def _value(row: Row, key: str) -> float | None:
    return row.averages.get(key) if key in AVERAGES else row.scores.get(key)


def _colour(method: str) -> str:
    """Fixed per method, so a method keeps its colour across models and runs."""
    known = list(METHODS)
    index = known.index(method) if method in known else len(known) + sum(map(ord, method))
    return f"C{index % 10}"


def _line(axis: Axes, points: list[tuple[float, float]], method: str, paper: bool = False) -> None:
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    style = {"linestyle": ":", "markerfacecolor": "none"} if paper else {"linestyle": "-"}
    label = f"{method} (paper)" if paper else method
    axis.plot(xs, ys, marker="o", color=_colour(method), label=label, **style)


def _paper_lines(axis: Axes, paper: PaperTable, methods: list[str], key: str, scored: list[str]) -> None:
    """An average panel gets the paper's average recomputed over the benchmarks we scored, so both sides compare
    the same thing; its published average may cover benchmarks we did not run."""

    def value(row: dict[str, float]) -> float | None:
        return paper.relative_average(row, scored) if key in AVERAGES else row.get(key)

    for method in methods:
        points = [(ratio, value(row)) for ratio, row in paper.series(method)]
        _line(axis, [(x, y) for x, y in points if y is not None], method, paper=True)
    base = value(paper.values(UNPRUNED, 0.0))
    if base is not None:
        axis.axhline(base, linestyle=":", color="grey", label="unpruned (paper)")


def write_figures(figures: dict[str, Figure], prefix: Path) -> list[Path]:
    """PREFIX_<model>.png and .pdf; a hub id's "/" and other unsafe characters become "_". The caller closes."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for model, figure in figures.items():
        stem = f"{prefix.name}_{re.sub(r'[^A-Za-z0-9._-]', '_', model)}"
        for suffix in (".png", ".pdf"):
            path = prefix.with_name(stem + suffix)
            figure.savefig(path, dpi=120)
            written.append(path)
    return written
