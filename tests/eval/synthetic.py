"""Synthetic grid results: several methods x ratios, an unpruned cell, a model without one, a missing benchmark."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from fastervlm.eval.report_cli import add_parsers
from fastervlm.eval.results import Cell, CellResult, write_result

BASE = {"gqa": 60.0, "pope": 80.0, "mme": 1500.0}
RATIOS = (0.9, 0.5)  # written out of order on purpose
METHODS = ("random", "fastv", "fastervlm", "zeta", "alpha")  # two unknown methods go last, alphabetically


def scores(method: str, ratio: float) -> dict[str, float]:
    drop = {"fastervlm": 0.1, "fastv": 0.2, "random": 0.4, "zeta": 0.5, "alpha": 0.5}[method] * ratio
    return {k: v * (1 - drop) for k, v in BASE.items()}


def put(root: Path, cell: Cell, values: dict[str, float], kept: float | None = None) -> None:
    tokens = {} if kept is None else {"kept_mean": kept, "total_mean": 576.0, "samples": 8}
    write_result(root, CellResult(cell, values, {}, tokens, 1.0, {}))


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
