"""The paper's published scores, looked up by our method names, to print and plot beside ours.

The numbers are data (fastervlm/data/paper/*.csv, from the authors' tables), never targets: nothing here
computes or adjusts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastervlm.data import paper_table
from fastervlm.eval.results import UNPRUNED

# Short names for --paper; the efficiency table has no benchmark scores, so it is not one of them.
PAPER_TABLES: dict[str, str] = {
    "llava15_7b": "fastervlm_llava15_7b",
    "llava15_13b": "fastervlm_llava15_13b",
    "llava_next_7b": "fastervlm_llava_next_7b",
    "video_llava_7b": "fastervlm_video_llava_7b",
}

_IDENTITY = ("model", "method", "reduction_pct")


@dataclass(frozen=True)
class PaperTable:
    """One published table: (our method name, reduction %) -> column -> value.

    Columns keep the CSV names, which are our benchmark keys plus visual_tokens and the avg_*_relative_pct ones.
    """

    name: str
    baseline: str  # the paper's name for the unpruned model, e.g. "LLaVA-1.5-7B"
    rows: dict[tuple[str, float], dict[str, float]]

    def values(self, method: str, reduction_pct: float | None) -> dict[str, float]:
        """Empty when the paper has no such row (a method it did not run, or a token budget instead of a ratio)."""
        if reduction_pct is None:
            return {}
        return self.rows.get((method, float(reduction_pct)), {})

    def series(self, method: str) -> list[tuple[float, dict[str, float]]]:
        """Every reduction the paper reports for one method, ascending."""
        return sorted((ratio, row) for (name, ratio), row in self.rows.items() if name == method)

    def relative_average(self, scores: dict[str, float], keys: Iterable[str]) -> float | None:
        """The paper's average recomputed from its own scores over `keys` only, to compare with ours on the same
        benchmarks (its published average covers every column of its table). None if it lacks one of them."""
        base = self.values(UNPRUNED, 0.0)
        keys = list(keys)
        if not keys or any(k not in scores or not base.get(k) for k in keys):
            return None
        return 100 * sum(scores[k] / base[k] for k in keys) / len(keys)


def load_paper(short: str) -> PaperTable:
    """The table behind a --paper short name.

    The paper names its unpruned rows after the model (at 0 % and, with no visual tokens, 100 %); we call that
    method "none". Other methods match by lower-cased name: FastV -> fastv, FasterVLM -> fastervlm.
    """
    if short not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {short!r} for --paper; choose one of: {', '.join(PAPER_TABLES)}")
    name = PAPER_TABLES[short]
    csv_rows = paper_table(name)
    baseline = next(r["method"] for r in csv_rows if float(r["reduction_pct"]) == 0)
    rows = {}
    for r in csv_rows:
        method = UNPRUNED if r["method"] == baseline else r["method"].lower()
        values = {k: float(v) for k, v in r.items() if k not in _IDENTITY and v != ""}
        rows[(method, float(r["reduction_pct"]))] = values
    return PaperTable(name, baseline, rows)
