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


def cut_layers(report: Report, sample: int = 0) -> list[int]:
    """LLM layers (0-based) whose input is shorter than the layer before's: where an in-LLM method cut."""
    lengths = report.seq_len_per_layer[sample]
    return [layer for layer in range(1, len(lengths)) if lengths[layer] < lengths[layer - 1]]


def panel_title(budget: str, kept: int, merged: int, last_cut: int | None, views: int = 1) -> str:
    """A kept-patch panel's title: what the view keeps as is, what the method made, and which LLM layers see it.

    last_cut: the LLM layer from which on the sequence is final (in-LLM methods); None before the LLM. A view
    that keeps no patch as is but gets merged tokens (2-D pooling) says so and is drawn undimmed (bright_patches).
    views: the image's views (LLaVA-NeXT's base + crops); merged tokens are counted per image, so with several
    views the title says the count is the whole image's.
    """
    if views > 1:
        what = f"{kept} kept" + (f" (+ {merged} merged, whole image)" if merged else "")
    elif not kept and merged:
        what = f"{merged} merged, none as is"
    else:
        what = f"{kept} kept" + (f" + {merged} merged" if merged else "")
    return f"{budget}: {what}" + (f"\nwhat LLM layers {last_cut}+ see" if last_cut is not None else "")


def bright_patches(kept: torch.Tensor, merged: int, patches: int) -> torch.Tensor:
    """The patches to draw undimmed: the kept ones, or all of them when every token was merged from the view
    (2-D pooling): a dark "0 kept" panel would say the opposite of what happened."""
    return torch.arange(patches) if not len(kept) and merged else kept


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
