"""Data the project carries: the FasterVLM paper's published numbers (arXiv 2412.01818 v1), for side by side."""

from __future__ import annotations

import csv
from importlib import resources


def paper_table(name: str) -> list[dict[str, str]]:
    """Rows of one of the paper's tables, e.g. "fastervlm_efficiency_llava_next_7b"."""
    files = resources.files("fastervlm.data") / "paper"
    found = sorted(p.name.removesuffix(".csv") for p in files.iterdir() if p.name.endswith(".csv"))
    if name not in found:
        raise ValueError(f"unknown paper table {name!r}; choose one of: {', '.join(found)}")
    with (files / f"{name}.csv").open() as handle:
        return list(csv.DictReader(handle))
