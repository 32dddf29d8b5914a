"""Every supported model family, visible in one table."""

from __future__ import annotations

from torch import nn

from fastervlm.models.base import ModelAdapter
from fastervlm.models.llava import LlavaAdapter

ADAPTERS: tuple[ModelAdapter, ...] = (LlavaAdapter(),)


def adapter_for(model: nn.Module) -> ModelAdapter:
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter
    supported = sorted(c for a in ADAPTERS for c in a.model_classes)
    raise TypeError(f"model class {name} is not supported; supported classes: {', '.join(supported)}")
