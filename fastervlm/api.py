"""prune / unprune / last_report: the only entry points users need."""

from __future__ import annotations

from typing import Any

from torch import nn

from fastervlm.methods import MethodConfig, UnknownOption, resolve_config
from fastervlm.models import adapter_class, adapter_for
from fastervlm.report import Report
from fastervlm.runtime.installation import Installation

ATTR = "_fastervlm"


def prune(model: nn.Module, method: str | MethodConfig = "fastervlm", **options: Any) -> nn.Module:
    """Prune in place and return the same object, so `m = prune(m, ...)` and `prune(m, ...)` agree.

    options are the method's config fields, e.g. ratio=0.9 (fraction of visual tokens removed per view)
    or tokens=58 (kept per view), and the model family's own options (LLaVA-NeXT's mode="paper", say).
    """
    if getattr(model, ATTR, None) is not None:
        raise ValueError("model is already pruned; call fastervlm.unprune(model) first")
    family = adapter_class(model)
    adapter = adapter_for(model, **{k: options.pop(k) for k in list(options) if k in family.options})
    try:
        config = resolve_config(method, options)
    except UnknownOption as error:
        model_options = ", ".join(sorted(family.options)) or "none"
        raise UnknownOption(f"{error}; {type(model).__name__}'s own options: {model_options}") from None
    setattr(model, ATTR, Installation.attach(model, adapter, config))
    return model


def installation(model: nn.Module) -> Installation:
    found = getattr(model, ATTR, None)
    if found is None:
        raise ValueError("model is not pruned; call fastervlm.prune(model, method=..., ratio=...) first")
    return found


def unprune(model: nn.Module) -> nn.Module:
    """Undo every hook and wrapper prune() installed: the stock model again, same object."""
    installation(model).detach()
    delattr(model, ATTR)
    return model


def last_report(model: nn.Module) -> Report | None:
    """What the last prefill of a pruned model really did; None if it has not run a forward since prune().

    Raises ValueError on a model that is not pruned (never pruned, or unpruned since): a stock model has no
    report, and returning None there would look like "pruned, not run yet".
    """
    return installation(model).report


def config_of(model: nn.Module) -> MethodConfig:
    return installation(model).config
