"""Speed-up and FLOPs against the reduction ratio, one line per method: what people look at first."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def ratio_plot(rows: list[dict], series: list[tuple[str, str]], title: str, path: Path) -> Path:
    """One panel per (field, label) in series; x is the ratio, one line per method, the unpruned model dashed."""
    figure, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4), squeeze=False)
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["method"] != "none":
            by_method[row["method"]].append(row)
    base = next((r for r in rows if r["method"] == "none"), None)
    for axis, (field, label) in zip(axes[0], series, strict=True):
        for method, points in sorted(by_method.items()):
            points = sorted(points, key=lambda r: r["ratio"])
            axis.plot([p["ratio"] for p in points], [p[field] for p in points], marker="o", label=method)
        if base is not None:
            axis.axhline(base[field], linestyle="--", color="grey", label="unpruned")
        axis.set_xlabel("reduction ratio (fraction of visual tokens removed)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
