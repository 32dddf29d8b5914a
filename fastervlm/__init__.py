"""fastervlm: training-free visual token pruning for vision-language models.

The public names load on first use (PEP 562), so `import fastervlm` and the command line's `--help`,
`--version` and argument errors do not pay for torch and transformers (about 4 s on a 2-core machine).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastervlm.api import last_report, prune, unprune
    from fastervlm.methods import METHODS
    from fastervlm.report import Report

__all__ = ["METHODS", "Report", "last_report", "prune", "unprune"]
__version__ = "0.1.0"

_HOMES = {
    "prune": "fastervlm.api",
    "unprune": "fastervlm.api",
    "last_report": "fastervlm.api",
    "METHODS": "fastervlm.methods",
    "Report": "fastervlm.report",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fastervlm' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
