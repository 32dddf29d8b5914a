"""Do two methods keep the same patches? The IoU of their kept sets, per sample, and its summary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from fastervlm.report import Report


@dataclass(frozen=True)
class Agreement:
    """Per-sample IoU of the kept (view, patch) sets of method_a and method_b, in sample order; names: what
    each sample is (an image file name, say), when the caller knows it."""

    method_a: str
    method_b: str
    iou: list[float]
    names: list[str] | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.iou)

    @property
    def median(self) -> float:
        return statistics.median(self.iou)

    def to_json(self) -> dict:
        return {
            "method_a": self.method_a,
            "method_b": self.method_b,
            "samples": len(self.iou),
            "mean_iou": self.mean,
            "median_iou": self.median,
            "iou": self.iou,
            **(
                {"per_sample": [{"image": n, "iou": v} for n, v in zip(self.names, self.iou, strict=True)]}
                if self.names is not None
                else {}
            ),
        }


def kept_sets(reports: list[Report], name: str) -> list[set[tuple[int, int]]]:
    """One set of (view, patch) per sample over the reports in order; a view's patch indices alone would
    let patch 5 of a crop match patch 5 of the base view."""
    sets = []
    for report in reports:
        if not report.applied:
            raise ValueError(f"{name} holds a report of {report.method!r} that did not apply: {report.note}")
        for views in report.kept_indices:
            sets.append({(v, int(i)) for v, kept in enumerate(views) for i in kept.tolist()})
    return sets


def agreement(
    reports_a: Report | list[Report], reports_b: Report | list[Report], names: list[str] | None = None
) -> Agreement:
    """IoU |A & B| / |A | B| per sample of two methods run on the same samples (reports batch by batch).

    names: one per sample, in order (refused if the count differs), for the JSON's per-sample entries.

    Two empty kept sets agree fully (1.0). Samples must line up: a different count is refused, since
    pairing sample i with sample j would report agreement that was never measured.
    """
    reports_a = [reports_a] if isinstance(reports_a, Report) else list(reports_a)
    reports_b = [reports_b] if isinstance(reports_b, Report) else list(reports_b)
    sets_a, sets_b = kept_sets(reports_a, "reports_a"), kept_sets(reports_b, "reports_b")
    if not sets_a or len(sets_a) != len(sets_b):
        raise ValueError(
            f"reports_a and reports_b must cover the same samples (at least one), got {len(sets_a)} and {len(sets_b)}"
        )
    if names is not None and len(names) != len(sets_a):
        raise ValueError(f"names must give one name per sample ({len(sets_a)}), got {len(names)}")
    iou = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in zip(sets_a, sets_b, strict=True)]
    methods = [{r.method for r in reports} for reports in (reports_a, reports_b)]
    return Agreement("+".join(sorted(methods[0])), "+".join(sorted(methods[1])), iou, names)
