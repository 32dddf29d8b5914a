"""Instance-level wrapping with an exact undo: never patch a class, never copy a forward."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

NOT_COPYABLE = (
    "a pruned model cannot be deep-copied or pickled: its hooks and wrappers belong to this one instance, and a copy "
    "would run the original's weights. Save model.state_dict() (and load it into a stock model, then prune it), or "
    "call fastervlm.unprune(model) first and prune the copy"
)


class InstanceBound:
    """Runtime state hung on one model instance: copying or pickling it raises a clear error.

    copy.deepcopy copies a module's functions by reference, so a deep-copied pruned model would keep calling the
    original's wrappers (the original's weights, the original's undo); pickle would fail on a local function with
    a message that names no cause. Every object prune() hangs on the model refuses both instead.
    """

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(NOT_COPYABLE)

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError(NOT_COPYABLE)


class Wrapped(InstanceBound):
    """obj.<name> replaced on one instance: calls around(original, *args, **kwargs).

    functools.update_wrapper keeps the signature visible: generate() inspects forward's and get_image_features'
    parameters to decide which inputs to pass.
    """

    def __init__(self, original: Callable[..., Any], around: Callable[..., Any]) -> None:
        functools.update_wrapper(self, original)
        self.original, self.around = original, around

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.around(self.original, *args, **kwargs)


def wrap(obj: object, name: str, around: Callable[..., Any]) -> Callable[[], None]:
    """Wrap obj.<name> on this instance only; return the undo."""
    had_own, original = name in vars(obj), getattr(obj, name)
    setattr(obj, name, Wrapped(original, around))
    return (lambda: setattr(obj, name, original)) if had_own else (lambda: delattr(obj, name))
