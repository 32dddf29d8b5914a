"""Every supported model family, visible in one table."""

from __future__ import annotations

from typing import Any

from torch import nn

from fastervlm.models.base import ModelAdapter
from fastervlm.models.llava import LlavaAdapter
from fastervlm.models.llava_next import LlavaNextAdapter
from fastervlm.models.llava_onevision import LlavaOnevisionAdapter
from fastervlm.models.qwen2_vl import Qwen2VLAdapter, Qwen3VLAdapter
from fastervlm.models.video_llava import VideoLlavaAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    VideoLlavaAdapter,
    Qwen2VLAdapter,
    Qwen3VLAdapter,
)


def adapter_class(model: nn.Module) -> type[ModelAdapter]:
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter
    supported = sorted(c for a in ADAPTERS for c in a.model_classes)
    raise TypeError(f"model class {name} is not supported; supported classes: {', '.join(supported)}")


def adapter_for(model: nn.Module, **options: Any) -> ModelAdapter:
    """The model's adapter, configured with its family's options (each checked against its allowed values)."""
    cls = adapter_class(model)
    for name, value in options.items():
        if name not in cls.options:
            allowed = ", ".join(sorted(cls.options)) or "none"
            raise ValueError(f"unknown option {name!r} for {type(model).__name__}; its options: {allowed}")
        if value not in cls.options[name]:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, cls.options[name]))} for {type(model).__name__}, "
                f"got {value!r}"
            )
    return cls(**options)
