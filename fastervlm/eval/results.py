"""One grid cell's result on disk, written so that a finished cell is unmistakable and a crashed one is not counted.

Layout under a grid's output folder:

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


def write_result(out: Path, result: CellResult) -> Path:
    """Atomic: write a temporary file in the same folder, then rename it over the final name."""
    folder = cell_dir(out, result.cell)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / RESULT_FILE
    tmp = folder / f".{RESULT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True))
    os.replace(tmp, final)
    return final


def read_results(root: Path) -> list[CellResult]:
    """Every finished cell under `root` (a grid's output folder, or a folder of several grids)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist")
    found = sorted(root.rglob(f"cells/*/{RESULT_FILE}"))
    return [CellResult.from_json(json.loads(path.read_text())) for path in found]
