from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastervlm.budget import Budget, kept_count


@pytest.mark.parametrize(
    ("n", "ratio", "kept"),
    [
        (576, 0.25, 432),
        (576, 0.5, 288),
        (576, 0.75, 144),
        (576, 0.9, 58),
        (576, 0.95, 29),
        (576, 1.0, 0),
        (576, 0.0, 576),
        (256, 0.9, 26),
        (256, 0.95, 13),
        (2880, 0.95, 144),
    ],
)
def test_paper_convention(n, ratio, kept):
    """The paper's tables: round((1 - R) N) per view (576 -> 432/288/144/58/29, 256 -> 26/13)."""
    assert kept_count(n, ratio) == kept


@given(st.integers(0, 5000), st.floats(0, 1), st.floats(0, 1))
def test_kept_count_in_range_and_monotone(n, a, b):
    lo, hi = sorted((a, b))
    assert 0 <= kept_count(n, hi) <= kept_count(n, lo) <= n


def test_tokens_budget():
    assert Budget(ratio=None, tokens=58).kept(576) == 58
    with pytest.raises(ValueError, match="tokens must be in \\[0, 576\\]"):
        Budget(ratio=None, tokens=600).kept(576)


@pytest.mark.parametrize("bad", [float("nan"), 2, -0.1, float("inf")])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match="ratio must be a number in \\[0, 1\\]"):
        Budget(ratio=bad)


@pytest.mark.parametrize("bad", [True, "0.5", [0.5]])
def test_ratio_of_wrong_type(bad):
    with pytest.raises(TypeError, match="ratio must be a real number"):
        Budget(ratio=bad)
