"""Arguments by name through a signature worked out once per function."""

from __future__ import annotations

import functools
import inspect

import pytest

from fastervlm.runtime import arguments
from fastervlm.runtime.arguments import fixed_parameters, named_arguments


class Model:
    def forward(self, input_ids, attention_mask=None, *, labels=None, **kwargs):
        return input_ids


def test_named_arguments_flatten_keywords_of_bound_and_wrapped_methods():
    model = Model()

    @functools.wraps(model.forward)
    def wrapped(*args, **kwargs):
        return model.forward(*args, **kwargs)

    for function in (model.forward, wrapped):
        got = named_arguments(function, (1, 2), {"labels": 3, "pixel_values": 4})
        assert got == {"input_ids": 1, "attention_mask": 2, "labels": 3, "pixel_values": 4}
        assert named_arguments(function, (), {"input_ids": 5}) == {"input_ids": 5}
        assert fixed_parameters(function) == {"input_ids", "attention_mask", "labels"}
    with pytest.raises(TypeError):
        named_arguments(model.forward, (1, 2, 3), {})


def test_signature_is_worked_out_once_per_function(monkeypatch):
    calls = []
    real = inspect.signature
    monkeypatch.setattr(arguments.inspect, "signature", lambda f: calls.append(f) or real(f))
    fresh = type("Fresh", (Model,), {"forward": lambda self, input_ids, **kwargs: input_ids})
    models = [fresh(), fresh()]
    for model in models * 3:
        named_arguments(model.forward, (1,), {})
    assert len(calls) == 1  # one function behind every bound method of every instance
