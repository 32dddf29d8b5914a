"""Argument types and choices shared by the command-line modules, light enough for a fast `--help`.

The registries the choices come from (methods, model families, architectures) live in modules that import
torch and transformers (seconds on a busy machine). `Names` reads one only when argparse needs its names: to
check a value given for that option, or to print a subcommand's usage. `fastervlm --help`, `--version` and a
mistyped command import neither.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import import_module
from typing import Any


class Names(Sequence[str]):
    """The sorted names in `module.attribute` (a mapping's keys whose value passes `where`, or a tuple's items),
    imported on first use (argparse's `choices`)."""

    def __init__(self, module: str, attribute: str, where: Callable[[Any], bool] | None = None) -> None:
        self.module, self.attribute, self.where = module, attribute, where
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            registry = getattr(import_module(self.module), self.attribute)
            pairs = registry.items() if isinstance(registry, Mapping) else ((name, name) for name in registry)
            keep = self.where or (lambda _: True)
            self._names = sorted(name for name, value in pairs if keep(value))
        return self._names

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return self.names()[index]

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, value: object) -> bool:
        return value in self.names()


METHOD_NAMES = Names("fastervlm.methods", "METHODS")
DEMO_ARCHS = Names("fastervlm.demo", "ARCHS")


def ratio_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios like 0.5,0.9, got {text!r}") from None


def method_list(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = [name for name in names if name not in METHOD_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--methods must be comma-separated names from: {', '.join(METHOD_NAMES)}; got {text!r}"
        )
    return names


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads for every command that runs a model; main() applies it before the command starts."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads torch may use (torch.set_num_threads); default: $OMP_NUM_THREADS if set, else one per "
        "physical core. On a shared machine 1-2 is often much faster than the default",
    )


def apply_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
