"""Per-call state: what one forward or generate call computes belongs to that call, not to the installation.

The hooks and wrappers prune() installs are shared by every caller of the model, but what they compute along one
forward (the scores of this encode, the selection, the in-LLM stage plans, the report) must not be: two threads
generating on one pruned model (a common serving pattern the stock model handles) would otherwise read each
other's selection. A `CallLocal` attribute keeps one value per execution context (each thread, each asyncio
task) in a `contextvars.ContextVar`, so the code that reads and writes `self.scores` stays as it reads; the shared
state (the installed hooks, the cache-keyed plans) stays a plain attribute.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any


class CallLocal:
    """A class attribute whose value, per instance, belongs to the current execution context.

    A value set in one thread is invisible to every other; a thread that never set it reads `default` (which is
    shared: use an immutable one, or None and assign before use).
    """

    def __init__(self, default: Any = None) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.key = f"_call_local_{name}"

    def _var(self, obj: Any) -> ContextVar:
        found = obj.__dict__.get(self.key)
        if found is None:
            # setdefault: two threads that create it at once still share one variable.
            found = obj.__dict__.setdefault(self.key, ContextVar(f"fastervlm.{type(obj).__name__}.{self.name}"))
        return found

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return self._var(obj).get(self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        self._var(obj).set(value)
