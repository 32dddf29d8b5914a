"""One grid cell's result on disk, written so that a finished cell is unmistakable and a crashed one is not counted.

Layout under a grid's output folder:

    <out>/grid.json                       the grid's name and every cell's name, written when a run starts,
                                          so `fastervlm table` can name the cells that have no result
    <out>/cells/<cell name>/result.json   written last, atomically: its presence means the cell finished
    <out>/cells/<cell name>/lmms/         lmms-eval's own outputs (samples, results)

`result.json` holds the cell's identity (model, method, ratio or tokens, options), the paper-scale score of
every benchmark, lmms-eval's raw metrics, and the visual token counts the runs really fed the language model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
MANIFEST_FILE = "grid.json"
ERROR_FILE = "error.txt"
UNPRUNED = "none"


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a model, a method (or the unpruned baseline) and a budget."""

    model: str
    method: str
    ratio: float | None = None
    tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        budget = f"t{self.tokens}" if self.tokens is not None else f"r{round(100 * (self.ratio or 0.0)):g}"
        return f"{self.model}__{self.method}__{budget}"

    @property
    def reduction_pct(self) -> float | None:
        return None if self.ratio is None else round(100 * self.ratio, 4)


@dataclass
class CellResult:
    cell: Cell
    scores: dict[str, float]
    metrics: dict[str, dict[str, float]]
    visual_tokens: dict[str, float]
    runtime_s: float
    versions: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cell"]["name"] = self.cell.name
        out["cell"]["reduction_pct"] = self.cell.reduction_pct
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        cell = {k: v for k, v in data["cell"].items() if k not in ("name", "reduction_pct")}
        return cls(
            cell=Cell(**cell),
            scores=data["scores"],
            metrics=data["metrics"],
            visual_tokens=data["visual_tokens"],
            runtime_s=data["runtime_s"],
            versions=data["versions"],
        )


def cell_dir(out: Path, cell: Cell) -> Path:
    return Path(out) / "cells" / cell.name


def is_done(out: Path, cell: Cell) -> bool:
    return (cell_dir(out, cell) / RESULT_FILE).is_file()


def write_atomic(path: Path, data: dict[str, Any]) -> Path:
    """Write a temporary file in the same folder, then rename it over the final name: a reader (or a Slurm array
    task writing the same file) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def write_result(out: Path, result: CellResult) -> Path:
    return write_atomic(cell_dir(out, result.cell) / RESULT_FILE, result.to_json())


def write_manifest(out: Path, grid: str, cells: list[Cell]) -> Path:
    return write_atomic(Path(out) / MANIFEST_FILE, {"grid": grid, "cells": [cell.name for cell in cells]})


@dataclass(frozen=True)
class MissingCell:
    name: str
    error: Path | None  # the traceback of its last failed run, if it failed

    @property
    def model(self) -> str:
        return self.name.split("__")[0]  # Cell.name is model__method__budget; model names hold no "__"

    @property
    def method(self) -> str:
        return self.name.split("__")[1]

    @property
    def budget(self) -> str:
        """ "25 %" for r25, "64 tokens" for t64."""
        code = self.name.split("__")[2]
        return f"{code[1:]} tokens" if code.startswith("t") else f"{code[1:]} %"


def missing_cells(root: Path, finished: list[CellResult]) -> list[MissingCell]:
    """Cells the grids under `root` list in their grid.json that have no result.json, in grid order."""
    done = {r.cell.name for r in finished}
    missing = []
    for manifest in sorted(Path(root).rglob(MANIFEST_FILE)):
        for name in json.loads(manifest.read_text())["cells"]:
            if name not in done:
                error = manifest.parent / "cells" / name / ERROR_FILE
                missing.append(MissingCell(name, error if error.is_file() else None))
    return missing


def read_results(root: Path) -> list[CellResult]:
    """Every finished cell under `root` (a grid's output folder, or a folder of several grids)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist")
    found = sorted(root.rglob(f"cells/*/{RESULT_FILE}"))
    return [CellResult.from_json(json.loads(path.read_text())) for path in found]
