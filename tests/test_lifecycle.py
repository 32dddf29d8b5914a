"""A pruned model's lifecycle: copies, pickles, the forward's return types (issue 15)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import fastervlm
from fastervlm.methods import METHODS
from fastervlm.tiny.clip_text import tiny_method_options
from tests.test_api import hook_ids
from tests.test_matrix import text_layers_for

COPY_ERROR = "a pruned model cannot be deep-copied or pickled"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_deepcopy_and_pickle_of_a_pruned_model_are_refused(make_llava, method):
    """A deep copy would share the original's wrappers (its weights, its undo): refused, the original untouched."""
    options = tiny_method_options(method)
    model = fastervlm.prune(make_llava(text_layers=text_layers_for(method, options)), method=method, **options)
    with pytest.raises(TypeError, match=COPY_ERROR):
        copy.deepcopy(model)
    with pytest.raises(TypeError, match=COPY_ERROR):
        pickle.dumps(model)
    with pytest.raises(TypeError, match=COPY_ERROR):
        torch.save(model, io.BytesIO())
    assert fastervlm.api.config_of(model).__class__ is METHODS[method].config


def test_state_dict_round_trip_and_unpruned_copy(make_llava, batch):
    """The ways that work: a state dict into a stock model pruned alike, or a copy made after unprune."""
    model = fastervlm.prune(make_llava(seed=1), method="fastervlm", ratio=0.9)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    other = make_llava(seed=2)
    other.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    fastervlm.prune(other, method="fastervlm", ratio=0.9)
    twin = fastervlm.prune(copy.deepcopy(fastervlm.unprune(model)), method="fastervlm", ratio=0.9)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(other(**batch).logits, expected, rtol=0, atol=0)
        twin.model.language_model.norm.weight.add_(1.0)  # the copy's weights are its own
        assert not torch.equal(twin(**batch).logits, expected)
        assert torch.equal(model(**batch).logits, expected)
    fastervlm.unprune(twin)
    assert hasattr(model, "_fastervlm")


def test_labels_with_return_dict_false_give_the_stock_tuple(make_llava, batch):
    """As the stock model: (loss, logits, past_key_values, image_hidden_states), the loss the pruned model's."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="fastervlm", ratio=0.9)
    with torch.no_grad():
        shape = [type(x) for x in stock(**batch, labels=labels, return_dict=False)]
        got = model(**batch, labels=labels, return_dict=False)
        as_dict = model(**batch, labels=labels)
        plain = model(**batch, return_dict=False)
    assert isinstance(got, tuple) and [type(x) for x in got] == shape
    assert torch.equal(got[0], as_dict.loss) and torch.equal(got[1], as_dict.logits)
    assert next(iter(as_dict.keys())) == "loss" and torch.equal(as_dict["loss"], as_dict.loss)
    assert isinstance(plain, tuple) and torch.equal(plain[0], as_dict.logits)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("fastervlm", {"tokens": 10**9}),
        ("visionzip", {"dominant": 500, "contextual": 100}),
        ("fastv", {"layer": 100}),
        ("sparsevlm", {"layers": (1, 2, 50)}),
    ],
)
def test_a_refused_prune_leaves_the_stock_model(make_llava, batch, method, options):
    """Checks that fail after some hooks went in undo them: a later prune must not inherit a stale one."""
    model = make_llava(text_layers=4)
    with torch.no_grad():
        expected = model(**batch).logits
    hooks, attributes = hook_ids(model), instance_attributes(model)
    with pytest.raises(ValueError):
        fastervlm.prune(model, method=method, **options)
    assert hook_ids(model) == hooks and instance_attributes(model) == attributes
    fastervlm.prune(model, method="fastervlm", ratio=0.5, score_layer=-1)  # scores the layer a stale trim skipped
    with torch.no_grad():
        model(**batch)
    fastervlm.unprune(model)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)


def instance_attributes(model: torch.nn.Module) -> set[tuple[str, str]]:
    """Callables set on module instances (our wrappers live there; the stock model sets none)."""
    return {(name, key) for name, m in model.named_modules() for key, v in vars(m).items() if callable(v)}
