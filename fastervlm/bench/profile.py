"""Where each prefill millisecond goes, per component, unpruned and pruned, against the floor of our approach.

Hooks time every component exclusively (a parent's time excludes its labelled children): the vision tower by
layer, the [CLS] scoring, the method's selection, the projector, the LLM embeddings, each LLM layer, the LM head,
and the rest of the call (model glue plus the runtime's own bookkeeping). Each component also opens a
`torch.profiler.record_function` range, so the same run read by `torch.profiler` names the top operators.

Four prefills of the same random model, repeats interleaved: the stock model; the stock model with the vision
tower trimmed to its feature layer (the exact cut a pruned model makes, fastervlm.runtime.trim); the pruned model;
and the floor, the stock modules fed exactly what pruning leaves: the trimmed tower, the projector on the kept rows
only, and the stock model on the already shortened sequence with those features. Pruned minus floor is the
runtime's own overhead (scoring, selection, sequence surgery, hooks).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from tqdm import tqdm
from transformers.modeling_outputs import BaseModelOutputWithPooling

import fastervlm
from fastervlm.api import installation
from fastervlm.bench.archs import Arch
from fastervlm.bench.flops import FlopsRow, flops
from fastervlm.bench.latency import built, now
from fastervlm.methods import method_entry
from fastervlm.models import adapter_for
from fastervlm.runtime import probe
from fastervlm.runtime.trim import TowerTrim, trim_tower

RUNS = ("stock", "stock trimmed", "pruned", "floor")


class Clock:
    """Exclusive wall time per label: each label's time excludes the labels opened inside it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []

    def _now(self) -> float:
        return now(self.device)

    def enter(self, label: str) -> None:
        scope = torch.profiler.record_function(label)
        scope.__enter__()
        self._stack.append([label, self._now(), 0.0, scope])

    def exit(self) -> None:
        label, start, children, scope = self._stack.pop()
        elapsed = self._now() - start
        scope.__exit__(None, None, None)
        self.totals[label] += 1000 * (elapsed - children)
        if self._stack:
            self._stack[-1][2] += elapsed

    def call(self, label: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.enter(label)
        try:
            return function(*args, **kwargs)
        finally:
            self.exit()

    def module(self, module: nn.Module, label: str) -> list[Callable[[], None]]:
        """Label a module's calls through forward hooks; return the removers."""
        before = module.register_forward_pre_hook(lambda m, a: self.enter(label))
        after = module.register_forward_hook(lambda m, a, o: self.exit())
        return [before.remove, after.remove]

    def take(self) -> dict[str, float]:
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals


def label_model(clock: Clock, model: nn.Module, tower: nn.Module) -> list[Callable[[], None]]:
    """Hooks on the components every run shares (vision layers, projector, LLM layers, LM head)."""
    undos = clock.module(tower, "vision: embeddings and glue")
    for i, layer in enumerate(tower.encoder.layers):
        undos += clock.module(layer, f"vision: layer {i:02d}")
    undos += clock.module(model.model.multi_modal_projector, "projector")
    language_model = model.model.language_model
    undos += clock.module(language_model, "llm: rotary, masks, norm")
    undos += clock.module(language_model.embed_tokens, "llm: embeddings")
    for i, layer in enumerate(language_model.layers):
        undos += clock.module(layer, f"llm: layer {i:02d}")
    undos += clock.module(model.lm_head, "lm head")
    return undos


def label_method(clock: Clock, model: nn.Module) -> list[Callable[[], None]]:
    """Label the pruned model's scoring and selection (instance wrappers; undone after the run)."""
    found = installation(model)
    method = found.method
    found.method = dataclasses.replace(method, select=lambda *a: clock.call("selection", method.select, *a))
    row = probe.cls_attention_row
    probe.cls_attention_row = lambda *a: clock.call("scoring", row, *a)
    return [lambda: setattr(found, "method", method), lambda: setattr(probe, "cls_attention_row", row)]


def floor_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor]:
    """From the last pruned prefill: the shortened sequence, and per image its kept patch indices."""
    found = installation(model)
    plan, report = found._plan, found.report
    pad = found._pad_id()
    short = {"input_ids": plan.gather(inputs["input_ids"], fill=pad), "attention_mask": plan.mask}
    kept = torch.stack([views[0] for views in report.kept_indices])
    return short, kept.to(inputs["input_ids"].device)


def floor_prefill(model: nn.Module, trim: TowerTrim, pixels: torch.Tensor, short: dict, kept: torch.Tensor) -> Any:
    """The stock modules on what pruning leaves: tower to the feature layer, projector on kept rows, short LLM."""
    tower = model.model.vision_tower
    hidden = trim.around(lambda: tower(pixels, output_hidden_states=True)).hidden_states
    patches = hidden[model.config.vision_feature_layer][:, 1:]  # 'default' strategy: [CLS] cropped
    rows = patches.gather(1, kept.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    features = model.model.multi_modal_projector(rows)
    encoded = {"image": BaseModelOutputWithPooling(pooler_output=list(features))}
    return model(**short, mm_encoder_outputs=encoded, logits_to_keep=1)


def profile(
    arch: Arch,
    method: str,
    ratio: float,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
    repeats: int = 5,
    warmup: int = 1,
) -> dict:
    """Median exclusive milliseconds per component for each of RUNS, plus each run's median total."""
    if arch.views != 1 or arch.options or arch.tower != "vision_tower":
        raise ValueError(f"the profile's floor is built for single-view LLaVA-1.5 layouts; got arch {arch.name!r}")
    if method_entry(method).stage != "vision":
        raise ValueError(f"the profile's floor needs a method that prunes before the LLM, got {method!r}")
    target = torch.device(device)
    model = built(arch, scale, target, dtype)
    inputs = {k: v.to(target) for k, v in arch.sample(1).items()}
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    tower = model.model.vision_tower
    clock = Clock(target)
    trim = TowerTrim(adapter_for(model).unused_vision_layers(model, "image", None))
    trim_undos = trim.removers()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in RUNS}
    short, kept = None, None
    with torch.no_grad(), ExitStack() as stack:
        stack.callback(lambda: [undo() for undo in reversed(trim_undos)])
        for undo in label_model(clock, model, tower):
            stack.callback(undo)
        for r in tqdm(range(warmup + repeats), desc=f"profile {arch.scaled_name(scale)} {method} {ratio:g}"):
            clock.call("rest of the call", model, **inputs, logits_to_keep=1)
            stock = clock.take()
            undos = trim_tower(model, adapter_for(model))
            clock.call("rest of the call", model, **inputs, logits_to_keep=1)
            for undo in reversed(undos):
                undo()
            trimmed = clock.take()
            fastervlm.prune(model, method=method, ratio=ratio)
            undos = label_method(clock, model)
            try:
                clock.call("rest of the call", model, **inputs, logits_to_keep=1)
                short, kept = floor_inputs(model, inputs)
            finally:
                for undo in reversed(undos):
                    undo()
                fastervlm.unprune(model)
            pruned = clock.take()
            clock.call("rest of the call", floor_prefill, model, trim, inputs["pixel_values"], short, kept)
            floor = clock.take()
            if r >= warmup:
                for name, totals in zip(RUNS, (stock, trimmed, pruned, floor), strict=True):
                    runs[name].append(totals)
    out = {"arch": arch.scaled_name(scale), "method": method, "ratio": ratio, "device": device, "runs": {}}
    for name, samples in runs.items():
        labels = sorted({label for s in samples for label in s})
        components = {label: statistics.median(s.get(label, 0.0) for s in samples) for label in labels}
        total = statistics.median(sum(s.values()) for s in samples)
        out["runs"][name] = {"total_ms": total, "components_ms": components}
    out["visual_tokens"] = int(kept.shape[1])
    stock_f, pruned_f = flops(arch, "none", 0.0, "counted", scale), flops(arch, method, ratio, "counted", scale)
    parts = {
        "stock": stock_f,
        "stock trimmed": dataclasses.replace(stock_f, vision_t=stock_f.vision_t - stock_f.vision_cut_t),
        "pruned": pruned_f,
        "floor": pruned_f,
    }
    out["flops_t"] = {name: sum(component_flops(row).values()) for name, row in parts.items()}
    out["component_flops_t"] = {name: component_flops(row) for name, row in parts.items()}
    pruned_ms, floor_ms = out["runs"]["pruned"]["total_ms"], out["runs"]["floor"]["total_ms"]
    out["runtime_overhead_ms"] = pruned_ms - floor_ms
    out["runtime_overhead_fraction"] = (pruned_ms - floor_ms) / pruned_ms
    return out


def component_flops(row: FlopsRow) -> dict[str, float]:
    return {"vision tower": row.vision_t, "projector": row.projector_t, "LLM": row.llm_t, "LM head": row.lm_head_t}


def top_operators(arch: Arch, method: str, ratio: float, *, scale: float = 1.0, rows: int = 12) -> list[dict]:
    """torch.profiler's top operators (self CPU time) of one pruned CPU prefill, after a warm-up."""
    model = arch.model(scale)
    inputs = arch.sample(1)
    fastervlm.prune(model, method=method, ratio=ratio)
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(**inputs, logits_to_keep=1)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000} for e in events]
