"""The grid runner: resumable cells, no partial result counted, stand-in gold from the unpruned model, wandb runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")
pytest.importorskip("wandb")

from fastervlm.eval import grid
from fastervlm.eval.lmms_model import FasterVLMLmms
from fastervlm.eval.results import read_results

CONFIG = {
    "name": "mini",
    "models": [{"name": "tiny", "pretrained": "tiny:llava-1.5", "args": {"device": "cpu", "dtype": "float32"}}],
    "methods": ["fastervlm"],
    "ratios": [0.9],
    "benchmarks": ["tiny_vqa", "tiny_mc"],
    "batch_size": 4,
    "wandb": {"project": "fastervlm-test", "mode": "offline"},
}


def wandb_runs(out: Path) -> dict[str, dict]:
    """Read the offline runs back from their .wandb files: run name -> config and final summary."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal.datastore import DataStore

    runs = {}
    for path in out.rglob("offline-run-*/run-*.wandb"):
        store = DataStore()
        store.open_for_scan(str(path))
        config, summary, name = {}, {}, None
        while (data := store.scan_data()) is not None:
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                summary.update({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
        runs[name] = {"config": config, "summary": summary}
    return runs


def test_grid_resumes_reruns_a_crashed_cell_and_logs_to_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    config = grid.parse_config(CONFIG)
    names = [cell.name for cell in config.cells()]
    assert names == ["tiny__none__r0", "tiny__fastervlm__r90"]

    real = FasterVLMLmms.set_pruning

    def crash_on_fastervlm(self, method="none", **kwargs):
        if method == "fastervlm":
            raise RuntimeError("simulated crash")
        return real(self, method, **kwargs)

    monkeypatch.setattr(FasterVLMLmms, "set_pruning", crash_on_fastervlm)
    assert grid.run(config, tmp_path) == 1
    crashed = tmp_path / "cells" / "tiny__fastervlm__r90"
    assert "simulated crash" in (crashed / "error.txt").read_text()
    assert not (crashed / "result.json").exists()
    assert [r.cell.name for r in read_results(tmp_path)] == ["tiny__none__r0"]
    # One bar on stderr, the grid's: none of datasets', transformers', lmms-eval's or the model's own.
    err = capfd.readouterr().err
    assert "mini: cells" in err and "cell tiny__fastervlm__r90" in err
    bars = (
        "Generating",
        "Creating parquet",
        "Map:",
        "Loading weights",
        "Postprocessing",
        "fastervlm generate",
        "it/s]",
    )
    assert not [bar for bar in bars if bar in err], err

    monkeypatch.setattr(FasterVLMLmms, "set_pruning", real)
    unpruned = tmp_path / "cells" / "tiny__none__r0" / "result.json"
    before = unpruned.stat().st_mtime_ns
    assert grid.run(config, tmp_path) == 0
    assert unpruned.stat().st_mtime_ns == before
    assert not (crashed / "error.txt").exists()

    results = {r.cell.name: r for r in read_results(tmp_path)}
    # The stand-in gold answers are the unpruned model's own, through the same lmms-eval path.
    assert results["tiny__none__r0"].scores == {"tiny_vqa": 100.0, "tiny_mc": 100.0}
    assert results["tiny__none__r0"].visual_tokens["kept_mean"] == 576
    pruned = results["tiny__fastervlm__r90"]
    assert pruned.visual_tokens == {"samples": 40, "total_mean": 576.0, "kept_mean": 58.0}
    assert pruned.scores["tiny_vqa"] == pytest.approx(100 * pruned.metrics["fvlm_tiny_vqa"]["exact_match,none"])
    assert (crashed / "lmms" / "samples_fvlm_tiny_vqa.jsonl").is_file()

    runs = wandb_runs(tmp_path)
    assert set(runs) == set(names)
    logged = runs["tiny__fastervlm__r90"]
    assert logged["config"]["method"] == "fastervlm"
    assert logged["config"]["ratio"] == 0.9
    assert logged["summary"]["score/tiny_vqa"] == pytest.approx(pruned.scores["tiny_vqa"])
    assert logged["summary"]["visual_tokens/kept_mean"] == 58


def test_one_cell_by_index_and_its_range(tmp_path: Path) -> None:
    config = grid.parse_config({**CONFIG, "wandb": None})
    with pytest.raises(ValueError, match=r"--cell 2 is out of range; the grid has cells 0\.\.1"):
        grid.run(config, tmp_path, only=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["fasterer"]}, "unknown method 'fasterer'"),
        ({"ratios": [0.0]}, "outside"),
        ({"benchmarks": ["vqa3"]}, "unknown benchmark 'vqa3'"),
        ({"judge": "human"}, "judge: 'human'"),
        ({"colour": "red"}, "unknown config keys"),
        ({"models": [{"name": "a/b", "pretrained": "x"}]}, "names a folder"),
    ],
)
def test_config_errors_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grid.parse_config({**CONFIG, **change})


def test_the_embedded_default_and_the_paper_configs_parse() -> None:
    default = grid.load_config("default")
    assert default.cells()[0].name == "tiny-llava-1.5__none__r0"
    assert len(default.cells()) == 1 + len(default.methods) * len(default.ratios)
    for path in sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml")):
        assert grid.load_config(path).cells(), path


def test_the_budgets_config_keeps_192_128_64() -> None:
    """The field's budgets as ratios: each gives exactly its token count, and every method takes it."""
    from fastervlm.budget import kept_count
    from fastervlm.methods import resolve_config

    config = grid.load_config(Path(__file__).parents[2] / "configs" / "llava15_7b_budgets.yaml")
    assert [kept_count(576, r) for r in config.ratios] == [192, 128, 64]
    for method in config.methods:
        for ratio in config.ratios:
            resolve_config(method, {**config.method_options.get(method, {}), "ratio": ratio})
