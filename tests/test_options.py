"""Every option is checked at prune() and named; numbers of any numeric type are numbers (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastervlm
from fastervlm.api import config_of
from fastervlm.methods import METHODS, resolve_config


@pytest.mark.parametrize(
    "ratio", [np.float32(0.5), np.float64(0.5), np.float16(0.5), torch.tensor(0.5), torch.tensor(0.5).double()]
)
def test_ratio_of_any_real_type(ratio):
    config = resolve_config("fastervlm", {"ratio": ratio})
    assert config == resolve_config("fastervlm", {"ratio": 0.5})
    assert type(config.ratio) is float


@pytest.mark.parametrize("tokens", [np.int64(58), np.int32(58), np.uint8(58), torch.tensor(58)])
def test_tokens_of_any_integer_type(tokens):
    config = resolve_config("fastervlm", {"tokens": tokens})
    assert config == resolve_config("fastervlm", {"tokens": 58}) and type(config.tokens) is int


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ratio", "0.5"),
        ("ratio", True),
        ("ratio", [0.5]),
        ("ratio", torch.tensor([0.5, 0.5])),
        ("ratio", 0.5j),
        ("tokens", 58.0),
        ("tokens", np.float32(58)),
        ("tokens", "58"),
        ("tokens", torch.tensor(58.0)),
    ],
)
def test_other_types_refused_by_type(name, value):
    with pytest.raises(TypeError, match=f"{name} must be a"):
        resolve_config("fastervlm", {name: value})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_takes_numpy_budgets(method):
    assert resolve_config(method, {"ratio": np.float32(0.75)}) == resolve_config(method, {"ratio": 0.75})
    assert resolve_config(method, {"tokens": np.int64(64)}) == resolve_config(method, {"tokens": 64})


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("visionzip", {"dominant": 500, "contextual": 100}, ValueError, "dominant \\+ contextual must be <= 576"),
        ("visionzip", {"dominant": 576, "contextual": 1}, ValueError, "dominant \\+ contextual must be <= 576"),
        ("visionzip", {"dominant": 10.0, "contextual": 2}, TypeError, "dominant must be an integer"),
        ("random", {"seed": 2**70}, ValueError, "seed must be in \\[-2\\*\\*63, 2\\*\\*64\\)"),
        ("random", {"seed": -(2**63) - 1}, ValueError, "seed must be in"),
        ("random", {"seed": 0.5}, TypeError, "seed must be an integer"),
        ("fastv", {"layer": 2.0}, TypeError, "layer must be an integer"),
        ("sparsevlm", {"recycle": "0.3"}, TypeError, "recycle must be a real number"),
        ("sparsevlm", {"schedule": (10, 5.5, 1)}, TypeError, "schedule must be an integer"),
    ],
)
def test_bad_option_refused_at_prune(tiny, method, options, error, match):
    with pytest.raises(error, match=match):
        fastervlm.prune(tiny, method=method, **options)
    assert not hasattr(tiny, "_fastervlm")


def test_numpy_option_values_are_plain(tiny):
    fastervlm.prune(tiny, method="random", ratio=np.float32(0.5), seed=np.int64(3))
    config = config_of(tiny)
    assert (type(config.ratio), type(config.seed)) == (float, int) and config.seed == 3


def test_extreme_but_valid_options_run(tiny, batch):
    """What prune() accepts runs: the largest seed torch takes; VisionZip's largest dominant + contextual."""
    fastervlm.prune(tiny, method="random", ratio=0.9, seed=2**64 - 1)
    with torch.no_grad():
        tiny(**batch)
    assert fastervlm.last_report(tiny).visual_tokens_out == 2 * 58
    fastervlm.unprune(tiny)
    fastervlm.prune(tiny, method="visionzip", dominant=500, contextual=76)
    with torch.no_grad():
        tiny(**batch)
    assert fastervlm.last_report(tiny).visual_tokens_out == 2 * 576


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, {"ratio": 0.9}), ({"ratio": None}, {"ratio": 0.9}), ({"ratio": None, "tokens": 58}, {"tokens": 58})],
)
def test_none_means_not_given(options, expected):
    assert resolve_config("fastervlm", options) == resolve_config("fastervlm", expected)
