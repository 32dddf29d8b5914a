from __future__ import annotations

from pathlib import Path

import pytest

from fastervlm.eval.results import Cell
from tests.eval.synthetic import BASE, METHODS, RATIOS, put, scores


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Model "llava": unpruned + methods x ratios + a token budget missing POPE; "other": no unpruned cell."""
    for method in METHODS:
        for ratio in RATIOS:
            put(tmp_path, Cell("llava", method, ratio=ratio), scores(method, ratio), kept=round(576 * (1 - ratio)))
    put(tmp_path, Cell("llava", "none", ratio=0.0), BASE, kept=576)
    put(tmp_path, Cell("llava", "fastervlm", tokens=64), {"gqa": 57.0, "mme": 1400.0}, kept=64)
    put(tmp_path, Cell("other", "fastervlm", ratio=0.5), {"gqa": 50.0})
    return tmp_path
