"""`fastervlm table`: row order, the paper's relative average, the three formats and --paper side by side."""

from __future__ import annotations

import pytest

from fastervlm.data import paper_table
from fastervlm.eval.paper import PAPER_TABLES, load_paper
from fastervlm.eval.results import Cell, cell_dir, read_results, write_manifest
from fastervlm.eval.table import BLANK, PARTIAL_NOTE, RECOMPUTED_NOTE, build_table, render
from tests.eval.synthetic import BASE, put, rows_of, run, scores


def test_row_order(results):
    table = build_table(read_results(results))
    order = [(r.model, r.method, r.reduction_pct, r.tokens) for r in table.rows]
    ranked = ["fastervlm", "fastv", "random", "alpha", "zeta"]
    assert order == [
        ("llava", "none", 0.0, None),
        *[("llava", m, 50.0, None) for m in ranked],
        *[("llava", m, 90.0, None) for m in ranked],
        ("llava", "fastervlm", None, 64),
        ("other", "fastervlm", 50.0, None),
    ]
    assert table.benchmarks == ["gqa", "pope", "mme"]  # BENCHMARKS order, not the results' order


def test_relative_average_by_hand(results):
    rows = {(r.model, r.method, r.reduction_pct, r.tokens): r for r in build_table(read_results(results)).rows}
    fastv = rows[("llava", "fastv", 90.0, None)]
    by_hand = 100 * sum(scores("fastv", 0.9)[k] / BASE[k] for k in BASE) / len(BASE)
    assert fastv.averages["avg_relative_pct"] == pytest.approx(by_hand)
    assert by_hand == pytest.approx(82.0)
    assert rows[("llava", "none", 0.0, None)].averages["avg_relative_pct"] == pytest.approx(100)
    budget = rows[("llava", "fastervlm", None, 64)]  # no POPE: GQA and MME only, and marked
    assert budget.averages["avg_relative_pct"] == pytest.approx(100 * (57 / 60 + 1400 / 1500) / 2)
    assert budget.partial and not fastv.partial
    assert rows[("other", "fastervlm", 50.0, None)].averages == {}


def test_markdown(results):
    text = render(build_table(read_results(results)), "md")
    lines = text.splitlines()
    assert lines[0] == "| Model | Method | Reduction | Tokens | GQA | POPE | MME | Avg. |"
    assert "| llava | unpruned | 0 % | 576 | 60.00 | 80.00 | 1500.00 | 100.00 |" in lines
    assert "| llava | fastv | 90 % | 58 | 49.20 | 65.60 | 1230.00 | 82.00 |" in lines
    assert f"| llava | fastervlm | 64 tokens | 64 | 57.00 | {BLANK} | 1400.00 | 94.17* |" in lines
    assert f"| other | fastervlm | 50 % | {BLANK} | 50.00 | {BLANK} | {BLANK} | {BLANK} |" in lines
    assert PARTIAL_NOTE in lines
    assert any(line.startswith("other: no unpruned cell") for line in lines)


def test_csv_round_trip(results):
    table = build_table(read_results(results))
    rows = rows_of(render(table, "csv"))
    assert [(r["model"], r["method"]) for r in rows] == [(r.model, r.method) for r in table.rows]
    for parsed, row in zip(rows, table.rows, strict=True):
        ours = {k: float(parsed[k]) for k in [*table.benchmarks, "avg_relative_pct"] if parsed[k]}
        assert ours == {**row.scores, **row.averages}  # full precision: exactly equal
        assert parsed["avg_partial"] == str(row.partial).lower()
    assert float(rows[0]["visual_tokens"]) == 576 and rows[0]["reduction_pct"] == "0"
    assert rows[-2]["tokens"] == "64" and rows[-2]["reduction_pct"] == ""


def test_latex(results):
    text = render(build_table(read_results(results)), "latex")
    assert text.startswith(r"\begin{tabular}{llrrrrrr}" + "\n" + r"\toprule")
    assert r"llava & fastv & 90 \% & 58 & 49.20 & 65.60 & 1230.00 & 82.00 \\" in text
    assert r"llava & fastervlm & 64 tokens & 64 & 57.00 & -- & 1400.00 & 94.17* \\" in text
    assert r"\bottomrule" in text and text.rstrip().endswith(r"\end{tabular}")
    assert text.count(r"\midrule") == 2  # under the header and between the two models
    assert BLANK not in text


def test_latex_escapes(tmp_path):
    put(tmp_path, Cell("my_model", "none", ratio=0.0), {"gqa": 1.0})
    text = render(build_table(read_results(tmp_path)), "latex")
    assert r"my\_model & unpruned & 0 \%" in text


def test_paper_side_by_side(results):
    table = build_table(read_results(results), paper=load_paper("llava15_7b"), model="llava")
    published = {(r["method"], float(r["reduction_pct"])): r for r in paper_table("fastervlm_llava15_7b")}
    rows = {(r["method"], r["reduction_pct"], r["tokens"]): r for r in rows_of(render(table, "csv"))}
    base = published[("LLaVA-1.5-7B", 0.0)]
    for ours, theirs in (("none", base), ("fastervlm", published[("FasterVLM", 90.0)])):
        row = rows[(ours, "0" if ours == "none" else "90", "")]
        for key in ("gqa", "pope", "mme", "visual_tokens"):
            assert float(row[f"{key}_paper"]) == float(theirs[key])
        # three of the paper's ten benchmarks: its average recomputed over the same three, and flagged
        by_hand = 100 * sum(float(theirs[k]) / float(base[k]) for k in BASE) / len(BASE)
        assert float(row["avg_relative_pct_paper"]) == pytest.approx(by_hand)
        assert row["avg_paper_recomputed"] == "true"
    assert rows[("fastv", "50", "")]["gqa_paper"] == published[("FastV", 50.0)]["gqa"]
    assert rows[("random", "50", "")]["gqa_paper"] == ""  # a method the paper did not run
    assert rows[("fastervlm", "", "64")]["gqa_paper"] == ""  # a token budget has no paper row
    md = render(table, "md")
    theirs = published[("FasterVLM", 90.0)]
    assert f"| {theirs['gqa']} / " not in md and f"/ {theirs['gqa']} |" in md
    assert RECOMPUTED_NOTE in md and "100.00 / 100.00†" in md
    assert "100.00 / 100.00$^\\dagger$" in render(table, "latex")


def test_paper_average_matches_published_when_same_benchmarks(tmp_path):
    """Our average over the paper's own ten scores reproduces its published column: the same formula.

    Not for SparseVLM: its published averages at 50/75/90 % are 0.16-0.26 above what its own row's scores give
    (the paper took them from elsewhere, we suppose), so that row cannot test the formula."""
    published = paper_table("fastervlm_llava15_7b")
    keys = [
        k for k in published[0] if k not in ("model", "method", "reduction_pct", "visual_tokens", "avg_relative_pct")
    ]
    for r in published:
        if r["reduction_pct"] in ("0", "90") and r["method"] != "SparseVLM":
            method = "none" if r["method"] == "LLaVA-1.5-7B" else r["method"].lower()
            put(tmp_path, Cell("llava", method, ratio=float(r["reduction_pct"]) / 100), {k: float(r[k]) for k in keys})
    table = build_table(read_results(tmp_path), paper=load_paper("llava15_7b"))
    for row in (row for row in table.rows if row.run):
        assert row.averages["avg_relative_pct"] == pytest.approx(row.paper["avg_relative_pct"], abs=0.006)
        assert not row.recomputed


def test_video_averages_split_accuracy_and_score(tmp_path):
    put(tmp_path, Cell("vl", "none", ratio=0.0), {"tgif_acc": 20.0, "tgif_score": 2.5, "msvd_acc": 70.0})
    put(tmp_path, Cell("vl", "fastervlm", ratio=0.5), {"tgif_acc": 10.0, "tgif_score": 2.0, "msvd_acc": 70.0})
    table = build_table(read_results(tmp_path))
    assert table.averages == ["avg_acc_relative_pct", "avg_score_relative_pct"]
    assert table.rows[1].averages == pytest.approx({"avg_acc_relative_pct": 75.0, "avg_score_relative_pct": 80.0})
    assert "| Avg. Acc | Avg. Score |" in render(table, "md")


def test_zero_baseline_is_left_out(tmp_path):
    put(tmp_path, Cell("tiny", "none", ratio=0.0), {"tiny_vqa": 0.0, "tiny_pope": 50.0})
    put(tmp_path, Cell("tiny", "fastervlm", ratio=0.5), {"tiny_vqa": 10.0, "tiny_pope": 25.0})
    table = build_table(read_results(tmp_path))
    assert table.rows[1].averages["avg_relative_pct"] == pytest.approx(50.0)
    assert not table.rows[1].partial
    assert table.notes == ["tiny: unpruned score 0 on tiny_vqa, left out of the relative averages"]


def test_cli_writes_each_format(results, tmp_path, capsys):
    assert run("table", str(results)) == 0
    assert capsys.readouterr().out.startswith("| Model |")
    for fmt in ("csv", "latex"):
        out = tmp_path / "tables" / f"table.{fmt}"
        assert run("table", str(results), "--format", fmt, "--out", str(out)) == 0
        assert out.read_text() == render(build_table(read_results(results)), fmt)
    assert run("table", str(results), "--paper", "llava15_13b", "--model", "llava") == 0
    assert "fastervlm_llava15_13b" in capsys.readouterr().out


def test_errors(results, tmp_path):
    with pytest.raises(ValueError, match="--paper; choose one of: " + ", ".join(PAPER_TABLES)):
        run("table", str(results), "--paper", "llava15")
    with pytest.raises(ValueError, match="--paper compares one model; pick one with --model from: llava, other"):
        run("table", str(results), "--paper", "llava15_7b")
    with pytest.raises(ValueError, match="--model 'nope' has no results; the results hold: llava, other"):
        run("table", str(results), "--model", "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no finished cells in .*empty"):
        run("table", str(empty))
    with pytest.raises(ValueError, match="--format 'html'; choose one of: md, csv, latex"):
        render(build_table(read_results(results)), "html")
    with pytest.raises(SystemExit):
        run("table", str(results), "--format", "html")


def test_duplicate_cells_are_refused(results):
    put(results / "second_grid", Cell("llava", "fastv", ratio=0.5), {"gqa": 1.0})
    with pytest.raises(ValueError, match=r"several results for the same row \(llava fastv 0\.5\)"):
        build_table(read_results(results))


def test_missing_cells_and_scores_are_named(results, capsys):
    """grid.json lists every cell of the grid: the ones without result.json are named, a failed one with its
    traceback's path; a row's missing benchmark is named too."""
    failed, never = Cell("llava", "random", ratio=0.25), Cell("llava", "fastv", ratio=0.75)
    write_manifest(results, "synthetic", [c.cell for c in read_results(results)] + [failed, never])
    error = cell_dir(results, failed) / "error.txt"
    error.parent.mkdir(parents=True)
    error.write_text("Traceback ...")
    assert run("table", str(results), "--model", "llava") == 0
    out = capsys.readouterr().out
    assert (
        f"missing cells (2 of the grid's, no result.json): failed: llava random 25 % (see {error}) | "
        "not run yet: llava fastv 75 %\n" in out
    )
    assert "missing scores: llava fastervlm 64 tokens: pope\n" in out
    assert "missing cells" not in render(build_table(read_results(results), model="other"), "md")


def test_paper_says_what_only_one_side_has(results, tmp_path):
    table = build_table(read_results(results), paper=load_paper("llava15_7b"), model="llava")
    notes = "\n".join(table.notes)
    assert "paper benchmarks not run here: mmbench, mmbench_cn, mmvet, sqa_img, textvqa, vizwiz, vqav2" in notes
    assert "no paper row for: random 50 %, alpha 50 %, zeta 50 %, random 90 %, alpha 90 %, zeta 90 %" in notes
    assert (
        "paper rows not run here (the paper's numbers only, marked 'not run'): fastervlm 25 %, fastv 25 %, "
        "fitprune 25 %, sparsevlm 25 %, fitprune 50 %" in notes
    )
    fitprune = [(row.reduction_pct, row.run) for row in table.rows if row.method == "fitprune"]
    assert fitprune == [(25.0, False), (50.0, False), (75.0, False), (90.0, False), (95.0, False)]
    published = {(r["method"], r["reduction_pct"]): r for r in paper_table("fastervlm_llava15_7b")}
    (row,) = [row for row in table.rows if row.method == "fitprune" and row.reduction_pct == 25]
    assert row.paper["gqa"] == float(published[("FitPrune", "25")]["gqa"]) and not row.scores
    md = render(table, "md")
    gqa = published[("FitPrune", "25")]["gqa"]
    assert f"| llava | fitprune (not run) | 25 % | {BLANK} / 432 | {BLANK} / {gqa} |" in md
    assert [r.method for r in table.rows[:2]] == ["none", "fastervlm"]  # unpruned first, then 25 % rows
    assert rows_of(render(table, "csv"))[1]["not_run"] == "true"
    assert "unpruned 100 %" in notes  # not run yet; then every method at ratio 1 is that row (no visual token)
    put(results, Cell("llava", "fastv", ratio=1.0), {"gqa": 40.0})
    table = build_table(read_results(results), paper=load_paper("llava15_7b"), model="llava")
    (no_tokens,) = [row for row in table.rows if row.reduction_pct == 100]
    published = next(r for r in paper_table("fastervlm_llava15_7b") if r["reduction_pct"] == "100")
    assert no_tokens.paper["gqa"] == float(published["gqa"])
    assert "unpruned 100 %" not in "\n".join(table.notes)
    put(tmp_path / "tiny", Cell("tiny", "none", ratio=0.0), {"tiny_vqa": 100.0})
    never_ran = build_table(read_results(tmp_path / "tiny"), paper=load_paper("llava15_7b"))
    assert "fastervlm_llava15_7b reports none of these benchmarks (tiny_vqa): the paper never ran this grid" in (
        "\n".join(never_ran.notes)
    )
