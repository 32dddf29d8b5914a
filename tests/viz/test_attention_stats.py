"""The shift and dispersion numbers on distributions worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fastervlm.viz.attention_stats import (
    Dispersion,
    Shift,
    bin_shares,
    centre_of_mass,
    entropy,
    normalised_entropy,
)


def test_entropy_of_hand_made_distributions():
    assert entropy(torch.tensor([0.5, 0.25, 0.25])) == pytest.approx(1.5 * math.log(2))
    assert entropy(torch.tensor([2.0, 1.0, 1.0])) == pytest.approx(1.5 * math.log(2))  # renormalised first
    assert entropy(torch.tensor([0.0, 1.0, 0.0])) == 0.0
    assert normalised_entropy(torch.ones(576)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no mass"):
        entropy(torch.zeros(3))


def test_bins_and_centre_of_mass_follow_raster_position():
    late = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    assert bin_shares(late, 3) == pytest.approx([0.0, 0.25, 0.75])
    assert centre_of_mass(late) == pytest.approx((3 * 0.25 + 4 * 0.25 + 5 * 0.5) / 5)
    assert centre_of_mass(torch.ones(7)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="bins must be between 1 and the 6 image tokens"):
        bin_shares(late, 7)


def test_shift_and_dispersion_summaries():
    rows = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]])  # (layers, image tokens)
    shift = Shift(bins=2, grid_rows=2)
    shift.add(rows)
    out = shift.to_json()
    assert out["mean_share_per_bin"] == pytest.approx([0.25, 0.75])
    assert torch.tensor(out["mean_share_per_bin_per_layer"]).tolist() == [[0.5, 0.5], [0.0, 1.0]]
    assert out["last_quarter_share"]["mean"] == pytest.approx(0.75)
    dispersion = Dispersion()
    dispersion.add(rows, torch.ones(4))
    out = dispersion.to_json()
    assert out["llm_entropy"]["mean"] == pytest.approx(math.log(2) / 2)
    assert out["cls_entropy_normalised"]["median"] == pytest.approx(1.0)
