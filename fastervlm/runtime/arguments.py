"""A wrapped call's arguments by name, with each function's signature worked out once.

`inspect.signature` walks `functools.wraps` chains and rebuilds every parameter on each call (tens of
microseconds for a transformers forward, several times per forward and per decode step); the signature of a
function never changes, so it is kept per function, weakly, so that it goes when the function does.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

_SIGNATURES: weakref.WeakKeyDictionary[Callable[..., Any], tuple[inspect.Signature, str | None, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


def signature_of(function: Callable[..., Any]) -> tuple[inspect.Signature, str | None, frozenset[str]]:
    """(signature, the var-keyword parameter's name or None, the other parameters' names) of a function.

    A bound method is keyed by its underlying function (a fresh bound object is made at every attribute access)
    and its signature drops the bound first parameter, as inspect.signature does.
    """
    key = getattr(function, "__func__", function)
    found = _SIGNATURES.get(key)
    if found is None:
        signature = inspect.signature(key)
        if key is not function:
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        kinds = {n: p.kind for n, p in signature.parameters.items()}
        var_keyword = next((n for n, k in kinds.items() if k is inspect.Parameter.VAR_KEYWORD), None)
        found = (signature, var_keyword, frozenset(n for n in kinds if n != var_keyword))
        _SIGNATURES[key] = found
    return found


def named_arguments(function: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every argument by name (var-keyword ones flattened), so a wrapper can rewrite any of them."""
    signature, var_keyword, _ = signature_of(function)
    bound = signature.bind(*args, **kwargs).arguments
    flat = bound.pop(var_keyword, {}) if var_keyword is not None else {}
    return {**bound, **flat}


def fixed_parameters(function: Callable[..., Any]) -> frozenset[str]:
    """The parameters a function names (all but its **kwargs)."""
    return signature_of(function)[2]
