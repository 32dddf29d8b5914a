"""The serving plan: which methods a vLLM server can run, and how many placeholders an image expands to."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from fastervlm.budget import kept_count
from fastervlm.methods import METHODS
from fastervlm.methods.pool import pooled_grid
from fastervlm.serving.plan import (
    ServingPlan,
    select_views,
    selected_count,
    servable_methods,
    stand_in_signals,
    unservable_reason,
)

GRID = (24, 24)
N = 576


def test_servable_methods_are_the_fixed_count_pre_llm_ones():
    servable = servable_methods()
    for name in ("fastervlm", "random", "pool", "visionzip"):
        assert name in servable
    for name, entry in METHODS.items():
        if entry.stage == "llm":
            assert name not in servable
            assert "inside the language model" in unservable_reason(name)
    assert "instruction" in unservable_reason("cdpruner")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"method": "fastervlm", "ratio": 0.9}, kept_count(N, 0.9)),
        ({"method": "fastervlm", "tokens": 64}, 64),
        ({"method": "random", "ratio": 0.75, "seed": 3}, kept_count(N, 0.75)),
        ({"method": "pool", "ratio": 0.9}, math.prod(pooled_grid(kept_count(N, 0.9), GRID))),
        ({"method": "visionzip", "tokens": 64}, 64),
        ({"method": "visionzip", "dominant": 20, "contextual": 5}, 25),
        ({"method": "fastervlm", "ratio": 0.0}, N),
    ],
)
def test_tokens_per_view_follow_the_budget(options, expected):
    assert ServingPlan.from_options(options).tokens_per_view(N, GRID) == expected


@pytest.mark.parametrize("name", servable_methods())
def test_count_is_fixed_whatever_the_image(name):
    """The count vLLM lays the prompt out with must be the count the method then selects, for any image."""
    plan = ServingPlan.from_options({"method": name, "ratio": 0.9})
    expected = plan.tokens_per_view(64, (8, 8))
    for seed in (1, 2, 3):
        signals = stand_in_signals(64, (8, 8), torch.Generator().manual_seed(seed), dim=16)
        assert selected_count(select_views(plan.config, signals)) == expected


def test_plan_from_hf_config_and_its_errors():
    plan = ServingPlan.from_hf_config(SimpleNamespace(fastervlm={"method": "pool", "tokens": 144}))
    assert plan.method == "pool" and plan.config.tokens == 144
    with pytest.raises(ValueError, match="no 'fastervlm' entry"):
        ServingPlan.from_hf_config(SimpleNamespace())
    with pytest.raises(ValueError, match="'method' key"):
        ServingPlan.from_options({"ratio": 0.9})
    with pytest.raises(ValueError, match=r"cannot be served.*servable: fastervlm"):
        ServingPlan.from_options({"method": "fastv", "ratio": 0.5})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        ServingPlan.from_options({"method": "nope"})
    with pytest.raises(ValueError, match="tokens must be in"):
        ServingPlan.from_options({"method": "fastervlm", "tokens": 600}).tokens_per_view(N, GRID)
