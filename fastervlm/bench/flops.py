"""Prefill FLOPs of the full-size architectures, per component, for any method and ratio.

Token counts come from running the method on the architecture's depth-true tiny twin (fastervlm.bench.archs);
FLOPs come from torch.utils.flop_counter over the full-size modules built under FakeTensorMode (no memory,
no weights). Attention runs eagerly there: the CPU sdpa kernel counts 0 FLOPs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode
from transformers import PretrainedConfig

import fastervlm
from fastervlm.bench.archs import ARCHS, Arch
from fastervlm.budget import kept_count
from fastervlm.methods import method_entry
from fastervlm.models import adapter_for
from fastervlm.runtime.trim import TowerTrim
from fastervlm.tiny.clip_text import tiny_method_options

CONVENTIONS = ("counted", "paper")
FP16_BYTES = 2


@dataclass(frozen=True)
class TokenPlan:
    """What a method lets through, read from a pruned forward of the twin."""

    lengths: list[int]  # tokens entering each LLM layer
    visual: list[int]  # of which visual, per layer
    projected: int  # rows the projector runs on


@dataclass
class FlopsRow:
    arch: str
    method: str
    ratio: float
    convention: str
    visual_tokens: int  # visual tokens in the deepest layer (the paper's column)
    flops_t: float
    vision_t: float  # the tower as this row's model runs it (a pruned model stops at the feature layer)
    projector_t: float
    llm_t: float
    lm_head_t: float
    kv_visual_mb: float  # fp16 KV cache of the visual tokens, all layers
    vision_cut_t: float = 0.0  # tower layers after the feature layer: no output needs them (counted convention)
    tokens: int | None = None  # the token budget per view, for a field-budget row (ratio is then its equivalent)
    visual_per_layer: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def equal_budget(arch: Arch, ratio: float | int) -> int:
    """Visual tokens a per-view method keeps per sample at `ratio` (or an int budget per view): the budget the
    paper gives FastV too."""
    return arch.views * (ratio if isinstance(ratio, int) else kept_count(arch.patches_per_view, ratio))


Budget = float | int  # a float is a reduction ratio, an int a token budget per view (the field's 192 / 128 / 64)


def budget_option(budget: Budget) -> dict[str, Budget]:
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise ValueError(f"budget must be a ratio (float) or a token count per view (int), got {budget!r}")
    return {"tokens": budget} if isinstance(budget, int) else {"ratio": budget}


def budget_ratio(arch: Arch, budget: Budget) -> float:
    """The reduction ratio a budget amounts to (a token budget: 1 - tokens / patches per view)."""
    return 1.0 - budget / arch.patches_per_view if isinstance(budget, int) else budget


def prune_for(arch: Arch, model: nn.Module, method: str, ratio: Budget, equal: bool = False) -> None:
    """The arch's setting, pruned by `method`; "none" is that setting unpruned (nothing to do for stock layouts).

    ratio: a reduction ratio, or an int token budget per view. equal: an in-LLM method (FastV) keeps as many
    tokens per sample as the per-view methods keep in all views, the paper's comparison (LLaVA-NeXT at 90 %:
    5 x 58 = 290, where 10 % of 2880 would be 288).
    """
    stand_ins = tiny_method_options(method)  # the twin is tiny: what a method loads by name is too
    if method != "none" and equal and method_entry(method).stage == "llm":
        fastervlm.prune(model, method=method, tokens=equal_budget(arch, ratio), **arch.options, **stand_ins)
    elif method != "none":
        fastervlm.prune(model, method=method, **budget_option(ratio), **arch.options, **stand_ins)
    elif arch.options:
        fastervlm.prune(model, method="fastervlm", ratio=0.0, **arch.options)


def token_plan(arch: Arch, method: str, ratio: Budget, equal: bool = False) -> TokenPlan:
    model, inputs = arch.twin(), arch.sample(1)
    tokens = [m.token_id for m in adapter_for(model).modalities(model)]
    visual_in = int(torch.isin(inputs["input_ids"], torch.tensor(tokens)).sum())
    text = int(inputs["input_ids"].numel()) - visual_in
    prune_for(arch, model, method, ratio, equal)
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)
    layers = model.config.text_config.num_hidden_layers
    if method == "none" and not arch.options:
        return TokenPlan([text + visual_in] * layers, [visual_in] * layers, visual_in)
    report = fastervlm.last_report(model)
    if not report.applied:
        raise RuntimeError(f"{method} did not prune the twin of {arch.name}: {report.note}")
    lengths = report.seq_len_per_layer[0]
    entry = method_entry(method) if method != "none" else None
    projected = report.visual_tokens_in if entry is not None and entry.stage == "llm" else report.visual_tokens_out
    if entry is not None and "projected_features" in entry.needs:  # every patch projected to score, kept ones again
        projected += report.visual_tokens_in
    return TokenPlan(lengths, [n - text for n in lengths], projected)


@cache
def full_size(name: str, scale: float = 1.0) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, TowerTrim]:
    """Vision tower, projector, language model and LM head, widths x scale, as fake tensors; and the tower's trim."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = ARCHS[name].model(scale)
        model.set_attn_implementation("eager")
    base, arch = model.model, ARCHS[name]
    modality = "video" if arch.tower == "video_tower" else "image"
    trim = TowerTrim(adapter_for(model, **arch.options).unused_vision_layers(model, modality, None))
    return getattr(base, arch.tower), arch.projector_of(base), base.language_model, model.lm_head, trim


def kv_width(config: PretrainedConfig) -> int:
    """Keys (and values) per token per layer: grouped-query models (Qwen) cache fewer heads than they query."""
    heads = config.num_attention_heads
    head = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (getattr(config, "num_key_value_heads", None) or heads) * head


def counted(run: callable) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 1e12


def llm_flops(language_model: nn.Module, lengths: list[int]) -> float:
    """Each decoder layer at its own length: layers after a pruning point run on fewer tokens."""
    total = 0.0
    width = language_model.config.hidden_size
    for layer, n in zip(language_model.layers, lengths, strict=True):
        with FakeTensorMode(allow_non_fake_inputs=True):
            hidden = torch.empty(1, n, width)
            positions = torch.arange(n).unsqueeze(0)
            rope = language_model.rotary_emb(hidden, position_ids=positions)
        total += counted(lambda layer=layer, hidden=hidden, rope=rope: layer(hidden, position_embeddings=rope))
    return total


def paper_llm_flops(text_config, visual: list[int]) -> float:
    """The paper's convention: visual tokens only, L x (8nd^2 + 4n^2 d + 6ndm), per layer with its own n."""
    d, m = text_config.hidden_size, text_config.intermediate_size
    return sum(8 * n * d * d + 4 * n * n * d + 6 * n * d * m for n in visual) / 1e12


def flops(
    arch: Arch, method: str, ratio: Budget, convention: str = "counted", scale: float = 1.0, equal: bool = False
) -> FlopsRow:
    """ratio: a reduction ratio, or an int token budget per view (the row then names it in `tokens`)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    plan = token_plan(arch, method, ratio, equal)
    tower, projector, language_model, lm_head, trim = full_size(arch.name, scale)
    pixels = arch.tower_inputs()
    with FakeTensorMode(allow_non_fake_inputs=True):
        rows = torch.empty(plan.projected, tower.config.hidden_size)
        last = torch.empty(1, language_model.config.hidden_size)
    vision = counted(lambda: tower(*pixels))
    cut = 0.0
    if convention == "paper":  # the paper counts the whole tower
        proj = head = 0.0
        llm = paper_llm_flops(language_model.config, plan.visual)
    else:
        # Qwen-VL's merger (its projector) is the tower's last module, counted there, on every patch.
        proj = counted(lambda: projector(rows)) if projector is not None else 0.0
        llm = llm_flops(language_model, plan.lengths)
        head = counted(lambda: lm_head(last))  # generate's prefill keeps the last position's logits only
        cut = vision - counted(lambda: trim.around(lambda: tower(*pixels)))
        if method != "none" or arch.options:  # the runtime runs this row: the tower stops at the feature layer
            vision -= cut
    kv = sum(plan.visual) * 2 * kv_width(language_model.config) * FP16_BYTES / 2**20
    return FlopsRow(
        arch=arch.scaled_name(scale),
        method=method,
        ratio=budget_ratio(arch, ratio),
        convention=convention,
        visual_tokens=plan.visual[-1],
        flops_t=vision + proj + llm + head,
        vision_t=vision,
        projector_t=proj,
        llm_t=llm,
        lm_head_t=head,
        kv_visual_mb=kv,
        visual_per_layer=plan.visual,
        vision_cut_t=cut,
        tokens=ratio if isinstance(ratio, int) else None,
    )
