"""Every pruning method, visible in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from fastervlm.methods import (
    cdpruner,
    dart,
    divprune,
    fastervlm,
    fastv,
    fitprune,
    pool,
    pyramiddrop,
    random,
    sparsevlm,
    visionzip,
    vispruner,
)

# A frozen dataclass with `budget`; in-LLM ones also `stages(num_layers) -> LlmStages`; a pre-LLM one may define
# `check_fits(num_patches)` to check every option against the model's views at prune() time (else the budget's).
MethodConfig = Any


@dataclass(frozen=True)
class Method:
    config: type
    select: Callable[[MethodConfig, Any], Any]
    needs: frozenset[str]
    merges: bool = False  # makes new tokens (select returns Merged), not only a subset of the patches

    @property
    def stage(self) -> str:
        """Where it prunes: "vision" (before the LLM, per view) or "llm" (inside it, per sample)."""
        return "llm" if any(need.startswith("llm_") for need in self.needs) else "vision"


METHODS: dict[str, Method] = {
    "fastervlm": Method(fastervlm.FasterVLMConfig, fastervlm.select, needs=frozenset({"vision_cls_row"})),
    "fastv": Method(fastv.FastVConfig, fastv.select, needs=frozenset({"llm_query_row"})),
    "sparsevlm": Method(
        sparsevlm.SparseVLMConfig,
        sparsevlm.select,
        needs=frozenset({"llm_query_row", "llm_visual_states", "llm_input_embeds"}),
        merges=True,
    ),
    "visionzip": Method(
        visionzip.VisionZipConfig,
        visionzip.select,
        needs=frozenset({"vision_cls_row", "vision_features", "vision_keys", "vision_cls_features"}),
        merges=True,
    ),
    "vispruner": Method(
        vispruner.VisPrunerConfig, vispruner.select, needs=frozenset({"vision_cls_row", "vision_features"})
    ),
    "divprune": Method(divprune.DivPruneConfig, divprune.select, needs=frozenset({"projected_features"})),
    "cdpruner": Method(
        cdpruner.CDPrunerConfig,
        cdpruner.select,
        needs=frozenset({"projected_features", "vision_features", "instruction"}),
    ),
    "dart": Method(dart.DartConfig, dart.select, needs=frozenset({"llm_keys", "llm_normed_states"})),
    "pyramiddrop": Method(pyramiddrop.PyramidDropConfig, pyramiddrop.select, needs=frozenset({"llm_query_row"})),
    "fitprune": Method(fitprune.FitPruneConfig, fitprune.select, needs=frozenset({"llm_query_row"})),
    "random": Method(random.RandomConfig, random.select, needs=frozenset()),
    "pool": Method(pool.PoolConfig, pool.select, needs=frozenset({"vision_features"}), merges=True),
}


class UnknownOption(ValueError):
    """An option that neither the method's config nor the model family takes."""


def method_entry(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_name(config: MethodConfig) -> str:
    for name, entry in METHODS.items():
        if type(config) is entry.config:
            return name
    raise TypeError(
        f"method must be a method name or one of {', '.join(e.config.__name__ for e in METHODS.values())}, "
        f"got {type(config).__name__}"
    )


def resolve_config(method: str | MethodConfig, options: dict[str, Any]) -> MethodConfig:
    """Turn prune()'s (method, **options) into the method's config; options name config fields."""
    if not isinstance(method, str):
        method_name(method)
        if options:
            raise ValueError(f"pass options inside the config object, not beside it: got {sorted(options)}")
        return method
    config_cls = method_entry(method).config
    # ratio=None / tokens=None mean "not given", so every caller (prune, lmms-eval's model_args, the grid) has one
    # rule: both given is an error, neither gives the method's default budget.
    options = {k: v for k, v in options.items() if not (k in ("ratio", "tokens") and v is None)}
    allowed = {f.name for f in fields(config_cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UnknownOption(f"unknown option(s) {unknown} for method {method!r}; allowed: {', '.join(sorted(allowed))}")
    if "tokens" in options and "ratio" not in options:
        options = {**options, "ratio": None}
    return config_cls(**options)
