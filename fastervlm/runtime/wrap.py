"""Instance-level wrapping with an exact undo: never patch a class, never copy a forward."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def wrap(obj: object, name: str, around: Callable[..., Any]) -> Callable[[], None]:
    """Wrap obj.<name> on this instance only; return the undo.

    functools.wraps keeps the signature visible: generate() inspects forward's and get_image_features'
    parameters to decide which inputs to pass.
    """
    had_own, original = name in vars(obj), getattr(obj, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return around(original, *args, **kwargs)

    setattr(obj, name, wrapped)
    return (lambda: setattr(obj, name, original)) if had_own else (lambda: delattr(obj, name))
