"""What a vLLM server prunes: the method, its config, and the placeholder count per image, fixed up front.

vLLM expands each image placeholder to a token count *before* the image is encoded (the prompt and the
encoder budget are laid out from it), so only methods that prune before the language model and keep a count
known from the budget alone can be served. This module imports neither vLLM nor any model code: the server's
processing side and the tests use it as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fastervlm.methods import METHODS, MethodConfig, method_entry, method_name, resolve_config
from fastervlm.methods.signals import Merged, ViewSignals

# The signals the vLLM model computes from its own CLIP tower and projector (fastervlm/serving/vllm_llava.py).
SERVED_SIGNALS = frozenset(
    {"vision_cls_row", "vision_features", "vision_keys", "vision_cls_features", "projected_features"}
)
CONFIG_KEY = "fastervlm"  # the key of --hf-overrides that carries {"method": ..., **options}


def unservable_reason(name: str) -> str | None:
    """Why a method cannot be served by the plugin, or None when it can."""
    entry = method_entry(name)
    if entry.stage == "llm":
        return "it prunes inside the language model, after vLLM has laid out the prompt"
    missing = sorted(entry.needs - SERVED_SIGNALS)
    if missing:
        return f"it needs {', '.join(missing)}, which the vLLM image path does not have"
    return None


def servable_methods() -> list[str]:
    return [name for name in METHODS if unservable_reason(name) is None]


@dataclass(frozen=True)
class ServingPlan:
    """One server's pruning: a servable method's config, the same for every request."""

    config: MethodConfig

    def __post_init__(self) -> None:
        name = method_name(self.config)
        reason = unservable_reason(name)
        if reason is not None:
            raise ValueError(
                f"method {name!r} cannot be served with vLLM: {reason}; servable: {', '.join(servable_methods())}"
            )

    @property
    def method(self) -> str:
        return method_name(self.config)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ServingPlan:
        """From the `fastervlm` entry of --hf-overrides: {"method": "fastervlm", "ratio": 0.9, ...}."""
        if not isinstance(options, Mapping) or "method" not in options:
            raise ValueError(
                f"{CONFIG_KEY} must be a mapping with a 'method' key and the method's options, "
                f'e.g. {{"method": "fastervlm", "ratio": 0.9}}; got {options!r}'
            )
        options = dict(options)
        return cls(resolve_config(options.pop("method"), options))

    @classmethod
    def from_hf_config(cls, hf_config: Any) -> ServingPlan:
        options = getattr(hf_config, CONFIG_KEY, None)
        if options is None:
            raise ValueError(
                f"the model config has no {CONFIG_KEY!r} entry; pass it with --hf-overrides, e.g. "
                f'\'{{"{CONFIG_KEY}": {{"method": "fastervlm", "ratio": 0.9}}}}\''
            )
        return cls.from_options(options)

    def tokens_per_view(self, num_patches: int, grid: tuple[int, int]) -> int:
        """Placeholders one view (image) expands to: the tokens the method hands the projector."""
        return tokens_per_view(self.config, num_patches, grid)


@functools.cache
def tokens_per_view(config: MethodConfig, num_patches: int, grid: tuple[int, int]) -> int:
    """The method's own select() on stand-in signals of one view: the count comes from the method code itself,
    never from a second copy of its arithmetic. Served methods' counts depend on the budget and the grid only
    (tests check this over several random inputs)."""
    getattr(config, "check_fits", config.budget.check_fits)(num_patches)
    selected = select_views(config, stand_in_signals(num_patches, grid, torch.Generator().manual_seed(0)))
    return selected_count(selected)


def stand_in_signals(num_patches: int, grid: tuple[int, int], generator: torch.Generator, dim: int = 8) -> ViewSignals:
    """Random signals of the shapes a served view has (one view, [CLS] attention a softmax row)."""
    cls_row = torch.softmax(torch.randn(1, num_patches + 1, generator=generator), dim=-1)[:, 1:]
    return ViewSignals(
        num_patches=num_patches,
        num_views=1,
        grid=grid,
        cls_attention=cls_row,
        features=torch.randn(1, num_patches, dim, generator=generator),
        keys=torch.randn(1, num_patches + 1, dim, generator=generator),
        cls_features=torch.randn(1, dim, generator=generator),
        projected=torch.randn(1, num_patches, dim, generator=generator),
    )


def select_views(config: MethodConfig, views: ViewSignals) -> torch.Tensor | Merged:
    return METHODS[method_name(config)].select(config, views)


def selected_count(selected: torch.Tensor | Merged) -> int:
    """Tokens per view a selection hands the projector: made tokens for merging methods, kept patches else."""
    return selected.tokens.shape[1] if isinstance(selected, Merged) else selected.shape[1]
