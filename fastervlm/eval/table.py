"""Finished grid cells as the paper's tables: rows method x reduction per model, columns benchmarks, then the
relative average, as Markdown, CSV or LaTeX; optionally with the paper's published numbers beside ours.

The relative average is the paper's (its Tables 1-4): the mean over benchmarks of score / the same model's
unpruned score, in percent, so MME's 1500-point scale weighs no more than a percentage. Video QA averages
accuracy and GPT score separately, as Table 4 does. With --paper, the paper's average is its published one when
we cover the same benchmarks, else recomputed from its published scores over ours (marked "†").

Choices the paper never had to make:

- A row missing a benchmark averages over the benchmarks both it and the unpruned row have, and is marked "*".
- A benchmark whose unpruned score is 0 is left out of the averages (a ratio to 0 is undefined); a note says so.
- A model without an unpruned cell gets no averages and a note; no baseline is ever invented.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastervlm.eval.benchmarks import BENCHMARKS
from fastervlm.eval.paper import PaperTable
from fastervlm.eval.results import UNPRUNED, CellResult, MissingCell
from fastervlm.methods import METHODS

# Average columns: CSV name (the paper CSVs' own) -> title.
AVERAGES: dict[str, str] = {
    "avg_relative_pct": "Avg.",
    "avg_acc_relative_pct": "Avg. Acc",
    "avg_score_relative_pct": "Avg. Score",
}
FORMATS = ("md", "csv", "latex")
BLANK = "\N{EN DASH}"  # a missing value; LaTeX gets "--"
PARTIAL_NOTE = "* average over only the benchmarks both this row and the model's unpruned row have"
RECOMPUTED_NOTE = "† the paper's average recomputed from its published scores over this row's benchmarks only"


def average_of(key: str) -> str:
    """The average column a benchmark counts in: Table 4 averages video QA accuracy (*_acc) and GPT score
    (*_score) apart; every other benchmark shares one average."""
    if key.endswith("_acc"):
        return "avg_acc_relative_pct"
    if key.endswith("_score"):
        return "avg_score_relative_pct"
    return "avg_relative_pct"


@dataclass
class Row:
    model: str
    method: str  # UNPRUNED for the baseline
    reduction_pct: float | None
    tokens: int | None  # a per-view token budget, for cells run with tokens= instead of a ratio
    visual_tokens: float | None  # what the runs really fed the LLM per sample (kept_mean)
    scores: dict[str, float]
    averages: dict[str, float] = field(default_factory=dict)
    used: dict[str, frozenset[str]] = field(default_factory=dict)  # average column -> the benchmarks it covers
    partial: bool = False
    paper: dict[str, float] = field(default_factory=dict)
    recomputed: set[str] = field(default_factory=set)  # paper averages recomputed over `used`
    run: bool = True  # False: a row of the paper's that this grid has no cell for (its numbers only)

    @property
    def unpruned(self) -> bool:
        return self.method == UNPRUNED


@dataclass
class Table:
    benchmarks: list[str]
    averages: list[str]
    rows: list[Row]
    notes: list[str]
    paper: PaperTable | None = None

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))


def build_table(
    results: list[CellResult],
    paper: PaperTable | None = None,
    model: str | None = None,
    missing: Iterable[MissingCell] = (),
) -> Table:
    """Rows per model: unpruned first, then by reduction ascending (methods in METHODS order), then token budgets.

    missing: cells the grids listed that have no result (results.missing_cells); the notes name them, as they
    name each row's missing benchmarks and, with the paper, the rows and benchmarks only one side has.
    """
    if not results:
        raise ValueError("no finished cells (cells/<name>/result.json) in the results folder")
    models = sorted({r.cell.model for r in results})
    if model is not None:
        if model not in models:
            raise ValueError(f"--model {model!r} has no results; the results hold: {', '.join(models)}")
        results, models = [r for r in results if r.cell.model == model], [model]
    if paper is not None and len(models) > 1:
        raise ValueError(f"--paper compares one model; pick one with --model from: {', '.join(models)}")
    _refuse_duplicates(results)
    keys = {k for r in results for k in r.scores}
    benchmarks = [k for k in BENCHMARKS if k in keys] + sorted(keys - BENCHMARKS.keys())
    averages = [a for a in AVERAGES if any(average_of(k) == a for k in benchmarks)]
    rows, notes = [], []
    for name in models:
        own = sorted((r for r in results if r.cell.model == name), key=_order)
        model_rows = [_row(r) for r in own]
        notes += _relative_averages(name, model_rows)
        rows += model_rows
    if any(r.partial for r in rows):
        notes.insert(0, PARTIAL_NOTE)
    notes += _missing_notes(rows, benchmarks, [m for m in missing if model is None or m.model == model])
    if paper is not None:
        for row in rows:
            _attach_paper(row, paper)
        notes.append(f"ours / paper: published numbers from {paper.name} (arXiv 2412.01818 v1)")
        if any(r.recomputed for r in rows):
            notes.append(RECOMPUTED_NOTE)
        if any(r.tokens is not None for r in rows):
            notes.append("rows with a token budget instead of a ratio have no paper counterpart")
        notes += _paper_gaps(rows, benchmarks, paper)
        rows = sorted(rows + _paper_only_rows(rows, paper), key=_row_order)
    return Table(benchmarks, averages, rows, notes, paper)


def _paper_only_rows(rows: list[Row], paper: PaperTable) -> list[Row]:
    """The paper's rows this grid did not run, with the paper's numbers only, so the table shows every row the
    paper has and which of them were not run."""
    model = rows[0].model
    base = next((r for r in rows if r.unpruned and r.run), None)
    ours = _paper_keys(rows)
    added = []
    for method, pct in paper.rows:
        if (method, pct) not in ours:
            # Averaged over the benchmarks ours are (†-marked when that is not all of the paper's), as our rows.
            row = Row(model, method, pct, None, None, {}, used=dict(base.used) if base else {}, run=False)
            _attach_paper(row, paper)
            added.append(row)
    return added


def _paper_keys(rows: list[Row]) -> set[tuple[str, float | None]]:
    """The paper rows ours stand for: (method, reduction), any method at 100 % standing for its no-token row."""
    ours = {(r.method, 0.0 if r.unpruned else r.reduction_pct) for r in rows if r.tokens is None and r.run}
    if any(r.reduction_pct == 100 for r in rows if r.run):
        ours.add((UNPRUNED, 100.0))
    return ours


def _row_order(row: Row) -> tuple:
    """The order build_table gives rows: unpruned, then by reduction (the no-token row first at 100 %, methods
    in METHODS order), then token budgets."""
    rank = list(METHODS).index(row.method) if row.method in METHODS else len(METHODS)
    if row.tokens is not None:
        return (2, -row.tokens, rank, row.method)
    if row.unpruned and not row.reduction_pct:
        return (0, 0.0, 0, "")
    return (1, row.reduction_pct or 0.0, -1 if row.unpruned else rank, row.method)


def _name(method: str) -> str:
    return "unpruned" if method == UNPRUNED else method


def _label(method: str, reduction_pct: float | None, tokens: int | None = None) -> str:
    budget = f"{tokens} tokens" if tokens is not None else f"{reduction_pct or 0:g} %"
    return f"{_name(method)} {budget}"


def _missing_notes(rows: list[Row], benchmarks: list[str], missing: list[MissingCell]) -> list[str]:
    """Say what is not in the table: grid cells without a result, and benchmarks a row has no score for."""
    notes = []
    if missing:
        failed = [f"{m.model} {_name(m.method)} {m.budget} (see {m.error})" for m in missing if m.error]
        pending: dict[tuple[str, str], list[str]] = {}
        for m in missing:
            if m.error is None:
                pending.setdefault((m.model, m.method), []).append(m.budget)
        waiting = [f"{model} {_name(method)} {', '.join(b)}" for (model, method), b in pending.items()]
        parts = ([f"failed: {'; '.join(failed)}"] if failed else []) + (
            [f"not run yet: {'; '.join(waiting)}"] if waiting else []
        )
        notes.append(f"missing cells ({len(missing)} of the grid's, no result.json): {' | '.join(parts)}")
    gaps = [
        f"{row.model} {_label(row.method, row.reduction_pct, row.tokens)}: {', '.join(absent)}"
        for row in rows
        if (absent := [k for k in benchmarks if k not in row.scores])
    ]
    if gaps:
        notes.append(f"missing scores: {'; '.join(gaps)}")
    return notes


def _paper_gaps(rows: list[Row], benchmarks: list[str], paper: PaperTable) -> list[str]:
    """What only one side has: a silent column of dashes would look like a table the paper left blank."""
    columns = {k for values in paper.rows.values() for k in values if k not in AVERAGES and k != "visual_tokens"}
    shared = [k for k in benchmarks if k in columns]
    notes = []
    if not shared:
        notes.append(
            f"{paper.name} reports none of these benchmarks ({', '.join(benchmarks)}): "
            "the paper never ran this grid, so its side shows only visual tokens and dashes"
        )
    elif absent := sorted(columns - set(benchmarks)):
        notes.append(f"paper benchmarks not run here: {', '.join(absent)}")
    if unmatched := [_label(r.method, r.reduction_pct) for r in rows if r.tokens is None and not r.paper]:
        notes.append(f"no paper row for: {', '.join(unmatched)}")
    ours = _paper_keys(rows)
    rows_in_order = sorted(paper.rows, key=lambda key: (key[1], key[0]))
    if not_run := [_label(m, pct) for m, pct in rows_in_order if (m, pct) not in ours]:
        notes.append(f"paper rows not run here (the paper's numbers only, marked 'not run'): {', '.join(not_run)}")
    return notes


def _attach_paper(row: Row, paper: PaperTable) -> None:
    """The paper's row for ours; its averages made comparable: published only if over the same benchmarks."""
    row.paper = dict(paper.values(row.method, 0.0 if row.unpruned and not row.reduction_pct else row.reduction_pct))
    if not row.paper and row.reduction_pct == 100:
        # The paper's 100 % row is the model with no visual token at all, which every method at ratio 1 is.
        row.paper = dict(paper.values(UNPRUNED, 100.0))
    if not row.paper:
        return
    published = {k for k in row.paper if k not in AVERAGES and k != "visual_tokens"}
    for column in AVERAGES:
        used = row.used.get(column)
        if used is not None and used == {k for k in published if average_of(k) == column}:
            continue
        value = None if used is None else paper.relative_average(row.paper, used)
        row.paper.pop(column, None)
        if value is not None:
            row.paper[column] = value
            row.recomputed.add(column)


def _refuse_duplicates(results: list[CellResult]) -> None:
    """Two results for one row (e.g. two grids with the same cell under one folder) would hide one of them."""
    seen: dict[tuple, int] = {}
    for r in results:
        c = r.cell
        key = (c.model, c.method) if c.method == UNPRUNED else (c.model, c.method, c.ratio, c.tokens)
        seen[key] = seen.get(key, 0) + 1
    twice = [" ".join(str(part) for part in key if part is not None) for key, n in seen.items() if n > 1]
    if twice:
        raise ValueError(f"several results for the same row ({'; '.join(twice)}); point at one grid's folder")


def _order(result: CellResult) -> tuple:
    c = result.cell
    rank = list(METHODS).index(c.method) if c.method in METHODS else len(METHODS)
    if c.method == UNPRUNED:
        return (0, 0.0, 0, "")
    if c.tokens is not None:
        return (2, -c.tokens, rank, c.method)
    return (1, c.ratio or 0.0, rank, c.method)


def _row(result: CellResult) -> Row:
    c = result.cell
    kept = result.visual_tokens.get("kept_mean")
    return Row(c.model, c.method, c.reduction_pct, c.tokens, kept, dict(result.scores))


def _relative_averages(model: str, rows: list[Row]) -> list[str]:
    """Fill each row's averages against the model's unpruned row; return the notes the table must carry."""
    base = next((r for r in rows if r.unpruned), None)
    if base is None:
        return [f"{model}: no unpruned cell (method {UNPRUNED!r}), so no relative average"]
    zero = sorted(k for k, v in base.scores.items() if v == 0)
    usable = {k: v for k, v in base.scores.items() if v != 0}
    present = {k for r in rows for k in r.scores} - set(zero)
    for row in rows:
        for column in AVERAGES:
            wanted = {k for k in present if average_of(k) == column}
            used = frozenset(k for k in wanted if k in row.scores and k in usable)
            if used:
                row.averages[column] = 100 * sum(row.scores[k] / usable[k] for k in used) / len(used)
                row.used[column] = used
            row.partial = row.partial or len(used) < len(wanted)
    if zero:
        return [f"{model}: unpruned score 0 on {', '.join(zero)}, left out of the relative averages"]
    return []


def render(table: Table, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](table)


def _number(value: float | None) -> str:
    return BLANK if value is None else f"{value:.2f}"


def _tokens(value: float | None) -> str:
    return BLANK if value is None else f"{round(value, 1):g}"


def _cells(table: Table, row: Row) -> list[str]:
    """The display cells of one row, "ours / paper" when the table carries the paper."""

    def pair(ours: str, key: str, show: Callable[[float | None], str]) -> str:
        return ours if table.paper is None else f"{ours} / {show(row.paper.get(key))}"

    method = ("unpruned" if row.unpruned else row.method) + ("" if row.run else " (not run)")
    budget = f"{row.tokens} tokens" if row.tokens is not None else f"{row.reduction_pct or 0:g} %"
    out = [row.model, method, budget, pair(_tokens(row.visual_tokens), "visual_tokens", _tokens)]
    out += [pair(_number(row.scores.get(k)), k, _number) for k in table.benchmarks]
    mark = "*" if row.partial else ""
    for a in table.averages:
        ours = _number(row.averages.get(a)) + mark
        out.append(
            ours if table.paper is None else f"{ours} / {_number(row.paper.get(a))}{'†' * (a in row.recomputed)}"
        )
    return out


def _header(table: Table) -> list[str]:
    titles = [BENCHMARKS[k].title if k in BENCHMARKS else k for k in table.benchmarks]
    return ["Model", "Method", "Reduction", "Tokens", *titles, *(AVERAGES[a] for a in table.averages)]


def to_markdown(table: Table) -> str:
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header = _header(table)
    lines = [line(header), "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(header) - 2)) + "|"]
    lines += [line(_cells(table, row)) for row in table.rows]
    if table.notes:
        lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: full precision, method "none" as in the results, `<column>_paper` beside each column,
    and the Markdown marks as true/false columns (avg_partial: "*", avg_paper_recomputed: "†", not_run)."""
    columns = ["visual_tokens", *table.benchmarks, *table.averages]
    paired = [c for column in columns for c in ((column, f"{column}_paper") if table.paper else (column,))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    flags = ["avg_partial", "avg_paper_recomputed", "not_run"] if table.paper else ["avg_partial"]
    writer.writerow(["model", "method", "reduction_pct", "tokens", *paired, *flags])
    for row in table.rows:
        values = {"visual_tokens": row.visual_tokens, **row.scores, **row.averages}
        values |= {f"{k}_paper": v for k, v in row.paper.items()}
        reduction = "" if row.reduction_pct is None else f"{row.reduction_pct:g}"
        tokens = "" if row.tokens is None else row.tokens
        cells = ["" if values.get(c) is None else repr(float(values[c])) for c in paired]
        marks = [str(mark).lower() for mark in (row.partial, bool(row.recomputed), not row.run)][: len(flags)]
        writer.writerow([row.model, row.method, reduction, tokens, *cells, *marks])
    return out.getvalue()


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{"}
_LATEX |= {"}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", BLANK: "--", "†": r"$^\dagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular (\\usepackage{booktabs}); the notes are full-width rows under the rule."""
    header = _header(table)
    lines = [rf"\begin{{tabular}}{{ll{'r' * (len(header) - 2)}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    previous = None
    for row in table.rows:
        if previous is not None and row.model != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(c) for c in _cells(table, row)) + r" \\")
        previous = row.model
    lines.append(r"\bottomrule")
    lines += [rf"\multicolumn{{{len(header)}}}{{l}}{{\footnotesize {latex_escape(n)}}} \\" for n in table.notes]
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"
