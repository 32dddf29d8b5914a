"""The experiment grid: models x methods x ratios over benchmarks, one lmms-eval evaluation per cell.

A cell is done when its result.json exists; the runner skips done cells and reruns the rest, so a crashed or
requeued run resumes where it stopped and a partial result is never counted. Each model's weights load once
per process; cells switch pruning in place (`FasterVLMLmms.set_pruning`). Under `accelerate launch` or
`torchrun` every process runs this loop and lmms-eval shards the documents; rank 0 writes the results.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from fastervlm.demo import TINY_TEXT_LAYERS
from fastervlm.eval import standin, videoqa
from fastervlm.eval.benchmarks import benchmark
from fastervlm.eval.progress import grid_progress, library_bars_off
from fastervlm.eval.results import (
    ERROR_FILE,
    UNPRUNED,
    Cell,
    CellResult,
    cell_dir,
    is_done,
    write_manifest,
    write_result,
)
from fastervlm.methods import METHODS

DEFAULT = "default"
TINY_PREFIX = "tiny:"
OUR_TASK_PREFIX = "fvlm_"
JUDGES = ("exact", "gpt")
console = Console(stderr=True)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridConfig:
    name: str
    models: tuple[ModelSpec, ...]
    methods: tuple[str, ...]
    ratios: tuple[float, ...]
    benchmarks: tuple[str, ...]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 1
    limit: int | float | None = None
    gen_kwargs: str | None = None
    judge: str = "exact"
    wandb: dict[str, Any] | None = None

    def cells(self) -> list[Cell]:
        """Per model: the unpruned cell, then every method at every ratio (a stable order: array indices)."""
        out = []
        for model in self.models:
            out.append(Cell(model.name, UNPRUNED, 0.0))
            for method in self.methods:
                options = self.method_options.get(method, {})
                out.extend(Cell(model.name, method, ratio, options=options) for ratio in self.ratios)
        return out

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for key in self.benchmarks for t in benchmark(key).tasks))


def load_config(source: str | Path) -> GridConfig:
    """A grid from a YAML file, or the embedded default (tiny model, stand-in tasks) for "default"."""
    if str(source) == DEFAULT:
        text = (resources.files("fastervlm.eval") / "default.yaml").read_text()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config {str(source)!r} is neither 'default' nor a YAML file")
        text = path.read_text()
    return parse_config(yaml.safe_load(text))


def parse_config(raw: dict[str, Any]) -> GridConfig:
    known = {"name", "models", "methods", "ratios", "benchmarks", "method_options", "batch_size", "limit"}
    known |= {"gen_kwargs", "judge", "wandb"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; allowed: {', '.join(sorted(known))}")
    missing = [key for key in ("name", "models", "methods", "ratios", "benchmarks") if key not in raw]
    if missing:
        raise ValueError(f"config is missing {', '.join(missing)}")
    for method in raw["methods"]:
        if method not in METHODS:
            raise ValueError(f"config methods: unknown method {method!r}; choose from: {', '.join(METHODS)}")
    for ratio in raw["ratios"]:
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"config ratios: {ratio} is outside (0, 1]; the unpruned cell (0) is always added")
    for key in raw["benchmarks"]:
        benchmark(key)
    judge = raw.get("judge", "exact")
    if judge not in JUDGES:
        raise ValueError(f"config judge: {judge!r} is not one of {', '.join(JUDGES)}")
    models = tuple(ModelSpec(m["name"], m["pretrained"], dict(m.get("args") or {})) for m in raw["models"])
    for model in models:
        if "/" in model.name or "__" in model.name:
            raise ValueError(f"config models: name {model.name!r} names a folder; use no '/' and no '__'")
    gen_kwargs = raw.get("gen_kwargs")
    if isinstance(gen_kwargs, dict):
        gen_kwargs = ",".join(f"{k}={v}" for k, v in gen_kwargs.items())
    return GridConfig(
        name=raw["name"],
        models=models,
        methods=tuple(raw["methods"]),
        ratios=tuple(float(r) for r in raw["ratios"]),
        benchmarks=tuple(raw["benchmarks"]),
        method_options=dict(raw.get("method_options") or {}),
        batch_size=int(raw.get("batch_size", 1)),
        limit=raw.get("limit"),
        gen_kwargs=gen_kwargs,
        judge=judge,
        wandb=raw.get("wandb"),
    )


def resolve_pretrained(spec: ModelSpec, out: Path) -> str:
    """`tiny:llava-1.5` is the embedded tiny model, saved once under the output folder; anything else is loaded as
    given (a hub id or a local folder)."""
    if not spec.pretrained.startswith(TINY_PREFIX):
        return spec.pretrained
    arch = spec.pretrained.removeprefix(TINY_PREFIX)
    if arch != "llava-1.5":
        raise ValueError(f"pretrained={spec.pretrained!r}: the embedded tiny model is 'tiny:llava-1.5'")
    with exclusive(out / ".prepare.lock"):
        return str(standin.tiny_checkpoint(out / "assets" / "tiny-llava-1.5", text_layers=TINY_TEXT_LAYERS))


def run(config: GridConfig, out: Path, only: int | None = None) -> int:
    """Run every pending cell (or only cell `only`); 0 when all of them finished, 1 when any failed."""
    from lmms_eval.tasks import TaskManager

    out = Path(out)
    cells = config.cells()
    if only is not None and not 0 <= only < len(cells):
        raise ValueError(f"--cell {only} is out of range; the grid has cells 0..{len(cells) - 1}")
    chosen = cells if only is None else [cells[only]]
    write_manifest(out, config.name, cells)
    pending = [cell for cell in chosen if not is_done(out, cell)]
    console.print(
        f"[bold]{config.name}[/]: {len(chosen) - len(pending)} of {len(chosen)} cells done, {len(pending)} to run"
    )
    if not pending:
        return 0
    os.environ["FASTERVLM_VIDEOQA_JUDGE"] = config.judge
    with exclusive(out / ".prepare.lock"):
        tasks_dir = videoqa.materialize(out / "tasks")
    ours_only = all(t.startswith(OUR_TASK_PREFIX) for t in config.tasks)
    manager = TaskManager("WARNING", include_path=str(tasks_dir), include_defaults=not ours_only)
    failures = 0
    with library_bars_off(), grid_progress(console) as progress:
        bar = progress.add_task(f"{config.name}: cells", total=len(pending))
        for spec in config.models:
            todo = [cell for cell in pending if cell.model == spec.name]
            if not todo:
                continue
            lm = load_model(spec, out, config.batch_size)
            lm.show_progress = False  # the grid's bar is the one bar
            prepare_standin(config, tasks_dir, lm, manager)
            for cell in todo:
                failures += not run_cell(config, out, cell, lm, manager)
                progress.advance(bar)
    return 1 if failures else 0


def load_model(spec: ModelSpec, out: Path, batch_size: int) -> Any:
    from fastervlm.eval.lmms_model import FasterVLMLmms

    return FasterVLMLmms(pretrained=resolve_pretrained(spec, out), batch_size=batch_size, **spec.args)


def prepare_standin(config: GridConfig, tasks_dir: Path, lm: Any, manager: Any) -> None:
    """Stand-in data on first use, labelled by this (unpruned) model's own answers.

    Slurm array tasks of one grid start together: a file lock lets the first one label while the others wait.
    """
    if not set(standin.TASKS) & set(config.tasks):
        return
    if lm.world_size > 1 and not standin.is_labelled(tasks_dir):
        raise RuntimeError("the stand-in tasks are labelled by one process: run the grid once without a launcher")
    with exclusive(tasks_dir / ".standin.lock"):
        if standin.is_labelled(tasks_dir):
            return
        standin.write(tasks_dir)
        lm.set_pruning()
        _, samples = evaluate(config, lm, manager, list(standin.TASKS))
        standin.apply_labels(tasks_dir, samples)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """An advisory lock on `path`, held for the block (flock: released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def evaluate(config: GridConfig, lm: Any, manager: Any, tasks: Sequence[str]) -> tuple[dict, dict]:
    from lmms_eval.evaluator import simple_evaluate

    results = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=config.limit,
        gen_kwargs=config.gen_kwargs,
        log_samples=True,
        verbosity="WARNING",
    )
    if lm.rank != 0:
        return {}, {}
    if results is None:
        raise RuntimeError("lmms-eval returned no results")
    return results, results.pop("samples", {})


def run_cell(config: GridConfig, out: Path, cell: Cell, lm: Any, manager: Any) -> bool:
    """One cell; a failure is logged to its folder (error.txt) and leaves no result.json."""
    folder = cell_dir(out, cell)
    folder.mkdir(parents=True, exist_ok=True)
    console.print(f"[cyan]cell[/] {cell.name}")
    start = time.perf_counter()
    try:
        lm.set_pruning(cell.method, ratio=cell.ratio, **cell.options)
        results, samples = evaluate(config, lm, manager, config.tasks)
        if lm.rank != 0:
            return True
        metrics = {task: _numbers(values) for task, values in results["results"].items()}
        scores = {key: benchmark(key).score(metrics) for key in config.benchmarks}
        result = CellResult(
            cell=cell,
            scores=scores,
            metrics=metrics,
            visual_tokens=lm.tally.as_dict(),
            runtime_s=time.perf_counter() - start,
            versions=_versions(),
        )
        _write_lmms_outputs(folder / "lmms", results, samples)
        log_wandb(config, out, cell, result)
        write_result(out, result)
        (folder / ERROR_FILE).unlink(missing_ok=True)
        console.print(
            f"  [green]done[/] in {result.runtime_s:.1f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
        )
        return True
    except Exception:
        (folder / ERROR_FILE).write_text(traceback.format_exc())
        console.print(f"  [red]failed[/]: see {folder / ERROR_FILE}\n{traceback.format_exc(limit=3)}")
        return False


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _write_lmms_outputs(folder: Path, results: dict[str, Any], samples: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str))
    for task, rows in samples.items():
        with (folder / f"samples_{task}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps({k: v for k, v in row.items() if k != "doc"}, default=str) + "\n")


def log_wandb(config: GridConfig, out: Path, cell: Cell, result: CellResult) -> None:
    """One wandb run per cell: identity as config, scores and realized token counts as summary metrics."""
    if not config.wandb:
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    settings = dict(config.wandb)
    run = wandb.init(
        project=settings.pop("project", "fastervlm"),
        group=settings.pop("group", config.name),
        name=cell.name,
        mode=settings.pop("mode", os.environ.get("WANDB_MODE", "offline")),
        dir=str(settings.pop("dir", out)),
        config={
            "grid": config.name,
            "model": cell.model,
            "method": cell.method,
            "ratio": cell.ratio,
            "reduction_pct": cell.reduction_pct,
            "tokens": cell.tokens,
            "options": cell.options,
        },
        reinit="finish_previous",
        **settings,
    )
    run.log(
        {
            **{f"score/{k}": v for k, v in result.scores.items()},
            **{f"visual_tokens/{k}": v for k, v in result.visual_tokens.items()},
            "runtime_s": result.runtime_s,
        }
    )
    run.finish()


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("fastervlm", "lmms_eval", "transformers", "torch")}
