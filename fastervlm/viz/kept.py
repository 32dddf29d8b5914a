"""What each method x budget keeps of the same inputs: one pruned prefill per config, on one model object."""

from __future__ import annotations

import torch
from rich.progress import Progress
from torch import nn

import fastervlm
from fastervlm.methods import MethodConfig, method_name
from fastervlm.report import Report


def config_label(config: MethodConfig) -> str:
    budget = f"ratio {config.ratio:g}" if config.ratio is not None else f"{config.tokens} tokens"
    return f"{method_name(config)}, {budget}"


def kept_reports(
    model: nn.Module, inputs: dict, configs: list[MethodConfig], progress: Progress | None = None
) -> list[Report]:
    """The report of one prefill per config, the model unpruned again after each.

    A prefill is all it takes: every method decides what to keep there (in-LLM ones at their stage layers).
    A report that did not apply is refused, since drawing it would show a pruning that never happened.
    """
    task = progress.add_task("pruning", total=len(configs)) if progress is not None else None
    reports = []
    for config in configs:
        if progress is not None:
            progress.update(task, description=f"pruning: {config_label(config)}")
        fastervlm.prune(model, config)
        try:
            with torch.no_grad():
                model(**inputs, logits_to_keep=1)  # the report is the point, not the logits
            report = fastervlm.last_report(model)
        finally:
            fastervlm.unprune(model)
        if report is None or not report.applied:
            reason = report.note if report is not None else "no pruned forward ran"
            raise RuntimeError(f"{config_label(config)} did not prune these inputs: {reason}")
        reports.append(report)
        if progress is not None:
            progress.advance(task)
    return reports
