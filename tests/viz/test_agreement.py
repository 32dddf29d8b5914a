"""Agreement between methods: IoU of kept (view, patch) sets per sample, from hand-made reports."""

from __future__ import annotations

import pytest
import torch

from fastervlm.report import Report
from fastervlm.viz.agreement import agreement


def report(method: str, *samples: list[list[int]]) -> Report:
    kept = [[torch.tensor(view) for view in views] for views in samples]
    return Report(method=method, kept_indices=kept, applied=True)


def test_iou_per_sample_and_summary():
    a = report("fastervlm", [[0, 1, 2, 3]], [[0, 1]], [[]])
    b = report("fastv", [[2, 3, 4, 5]], [[0, 1]], [[]])
    result = agreement(a, b)
    assert result.iou == [2 / 6, 1.0, 1.0]
    assert result.mean == pytest.approx((2 / 6 + 2) / 3) and result.median == 1.0
    assert result.to_json()["method_a"] == "fastervlm" and result.to_json()["samples"] == 3


def test_views_are_told_apart_and_batches_concatenate():
    a = [report("fastervlm", [[0, 1], [0]]), report("fastervlm", [[7]])]
    b = [report("fastv", [[0], [1]]), report("fastv", [[7]])]
    assert agreement(a, b).iou == [1 / 4, 1.0]  # patch 0 of view 0 matches; patch 0 vs 1 of view 1 does not


def test_mismatched_or_unapplied_reports_are_refused():
    with pytest.raises(ValueError, match="same samples"):
        agreement(report("a", [[0]]), report("b", [[0]], [[1]]))
    with pytest.raises(ValueError, match="reports_b holds a report of 'fastv' that did not apply"):
        agreement(report("a", [[0]]), Report(method="fastv", note="no image"))
