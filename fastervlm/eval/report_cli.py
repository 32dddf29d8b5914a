"""`fastervlm table` and `fastervlm plot`: a results folder as the paper's tables and score curves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fastervlm.cli_args import Names
from fastervlm.eval.paper import PAPER_TABLES

if TYPE_CHECKING:
    from fastervlm.eval.table import Table

FORMATS = Names("fastervlm.eval.table", "FORMATS")  # the table module imports torch: loaded when needed
PAPER_HELP = f"put the paper's published numbers beside ours; one of: {', '.join(PAPER_TABLES)}"


def add_parsers(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser("table", help="the paper's table layout: rows method x reduction, columns benchmarks")
    t.add_argument("results", type=Path, metavar="RESULTS_DIR", help="a grid's output folder, or a folder of grids")
    t.add_argument("--format", default="md", choices=FORMATS, metavar="FORMAT", help="%(choices)s (default md)")
    t.add_argument("--out", type=Path, help="write to this file instead of stdout")
    t.add_argument("--paper", metavar="MODEL_TABLE", help=f"{PAPER_HELP}; Markdown and LaTeX show 'ours / paper'")
    t.add_argument("--model", help="only this model's rows (--paper needs one model)")
    t.set_defaults(func=run_table)

    p = commands.add_parser("plot", help="score vs reduction per benchmark and on average, one line per method")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="a grid's output folder, or a folder of grids")
    p.add_argument(
        "--out", type=Path, metavar="PREFIX", help="PREFIX_<model>.png and .pdf (default RESULTS_DIR/plots/scores)"
    )
    p.add_argument("--paper", metavar="MODEL_TABLE", help=f"{PAPER_HELP}, dotted with hollow markers")
    p.add_argument("--model", help="only this model (--paper needs one model)")
    p.set_defaults(func=run_plot)


def load_table(args: argparse.Namespace) -> Table:
    """--paper is checked before the folder is read, so a typo fails fast whatever the folder holds."""
    from fastervlm.eval.paper import load_paper
    from fastervlm.eval.results import missing_cells, read_results
    from fastervlm.eval.table import build_table

    paper = load_paper(args.paper) if args.paper is not None else None
    results = read_results(args.results)
    if not results:
        raise ValueError(f"no finished cells in {str(args.results)!r}: no cells/<name>/result.json under it")
    return build_table(results, paper=paper, model=args.model, missing=missing_cells(args.results, results))


def run_table(args: argparse.Namespace) -> int:
    from fastervlm.eval.table import render

    text = render(load_table(args), args.format)
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written: {args.out}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from fastervlm.eval.plot import score_figures, write_figures

    table = load_table(args)
    figures = score_figures(table)
    for path in write_figures(figures, args.out or args.results / "plots" / "scores"):
        print(f"written: {path}")
    for figure in figures.values():
        plt.close(figure)
    if any(r.tokens is not None for r in table.rows):
        print("note: rows with a token budget instead of a ratio have no x position and are not plotted")
    return 0
