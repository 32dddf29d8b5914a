"""One progress bar for a grid run: the libraries' own bars switched off while it runs.

A default-grid run printed about 40 bars per cell to stderr (datasets' "Generating split" / "Creating parquet"
/ "Map", transformers' "Loading weights", lmms-eval's request building and "Postprocessing", our model's
batches), which buried the cell lines and errors in logs and Slurm output.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# lmms-eval 0.7.3 modules that call tqdm for every evaluation (request building, postprocessing).
LMMS_TQDM_MODULES = ("lmms_eval.evaluator", "lmms_eval.api.task")


@contextmanager
def library_bars_off() -> Iterator[None]:
    """datasets', transformers', huggingface_hub's and lmms-eval's progress bars off; each restored on exit."""
    import importlib

    import datasets
    import huggingface_hub.utils as hub
    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    with ExitStack() as undo:
        for is_on, off, on in (
            (datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
            (
                transformers_logging.is_progress_bar_enabled,
                transformers_logging.disable_progress_bar,
                transformers_logging.enable_progress_bar,
            ),
            (lambda: not hub.are_progress_bars_disabled(), hub.disable_progress_bars, hub.enable_progress_bars),
        ):
            if is_on():
                off()
                undo.callback(on)
        for name in LMMS_TQDM_MODULES:
            module = importlib.import_module(name)
            # These modules bind `from tqdm import tqdm` at import; a silent one in its place, put back on exit.
            undo.callback(setattr, module, "tqdm", module.tqdm)
            module.tqdm = silent(tqdm)
        yield


def silent(tqdm: type) -> Any:
    """tqdm with disable=True whatever the caller passes (lmms-eval passes disable=(RANK != 0))."""

    @functools.wraps(tqdm)
    def make(*args: Any, **kwargs: Any) -> Any:
        return tqdm(*args, **{**kwargs, "disable": True})

    return make


def grid_progress(console: Console) -> Progress:
    """The grid's bar on `console` (stderr), cells done of cells to run; cell lines print above it."""
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(*columns, console=console)
