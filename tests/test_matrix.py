"""Every method through the same contract: one row per method gives it every check (STYLE.md section 6)."""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.methods import METHODS, resolve_config
from fastervlm.tiny.clip_text import tiny_method_options

CASES = [
    ("fastervlm", {"ratio": 0.9}),
    ("fastv", {"ratio": 0.75}),
    ("visionzip", {"tokens": 64}),
    ("random", {"ratio": 0.9}),
    ("pool", {"ratio": 0.9}),
    ("sparsevlm", {"ratio": 0.75}),
    ("vispruner", {"ratio": 0.9}),
    ("divprune", {"tokens": 64}),
    ("cdpruner", {"tokens": 32, **tiny_method_options("cdpruner")}),
    ("dart", {"ratio": 0.75}),
    ("pyramiddrop", {"ratio": 0.5, "layers": (1, 2, 3)}),
    ("fitprune", {"schedule": (100, 200, 50, 0)}),
]
TEXT_LAYERS = 4  # FastV prunes from layer 2 on, so the language model needs layers after it


def text_layers_for(method: str, options: dict) -> int:
    """TEXT_LAYERS, or more when an in-LLM method's stages need them (SparseVLM prunes after layer 15)."""
    if METHODS[method].stage != "llm":
        return TEXT_LAYERS
    if method == "fitprune":  # its fitted schedules are for 32-layer language models; schedule= for any depth
        return len(options["schedule"]) if "schedule" in options else 32
    stages = resolve_config(method, dict(options)).stages(num_layers=10**6)
    return max(TEXT_LAYERS, stages.layers[-1] + 1)


@pytest.fixture
def llava(make_llava, method, options):
    return lambda **kw: make_llava(text_layers=text_layers_for(method, options), **kw)


@pytest.mark.parametrize(("method", "options"), CASES)
def test_batched_equals_one_by_one(llava, batch, method, options):
    model = fastervlm.prune(llava(), method=method, **options)
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=5, do_sample=False)
        batched_out = fastervlm.last_report(model).visual_tokens_out
        alone_out = 0
        for i in range(2):
            real = batch["attention_mask"][i].bool()
            one = {
                "input_ids": batch["input_ids"][i : i + 1, real],
                "attention_mask": batch["attention_mask"][i : i + 1, real],
                "pixel_values": batch["pixel_values"][i : i + 1],
            }
            alone = model.generate(**one, max_new_tokens=5, do_sample=False)
            alone_out += fastervlm.last_report(model).visual_tokens_out
            assert torch.equal(alone[0, one["input_ids"].shape[1] :], batched[i, batch["input_ids"].shape[1] :])
    assert alone_out == batched_out


@pytest.mark.parametrize(("method", "options"), CASES)
def test_kv_cache_and_report_agree(llava, batch, method, options):
    """The report's counts are what the language model really holds: per-layer lengths and the KV cache."""
    model = fastervlm.prune(llava(), method=method, **options)
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    report = fastervlm.last_report(model)
    real = batch["attention_mask"].sum(dim=1)
    pads = (batch["attention_mask"] == 0).sum(dim=1)
    deepest = [layers[-1] for layers in report.seq_len_per_layer]
    assert report.applied and report.visual_tokens_out < report.visual_tokens_in
    assert sum(deepest) == int(real.sum()) - report.visual_tokens_in + report.visual_tokens_out
    assert out.past_key_values.layers[-1].keys.shape[-2] == max(d + int(p) for d, p in zip(deepest, pads, strict=True))
    assert [layers[0] for layers in report.seq_len_per_layer] == report.llm_input_lengths


@pytest.mark.parametrize(("method", "options"), CASES)
def test_unprune_restores_stock_exactly(llava, batch, method, options):
    model = llava()
    with torch.no_grad():
        expected = model(**batch).logits
        fastervlm.prune(model, method=method, **options)
        model.generate(**batch, max_new_tokens=2, do_sample=False)
        fastervlm.unprune(model)
        assert torch.equal(model(**batch).logits, expected)


@pytest.mark.parametrize(("method", "options"), CASES)
def test_text_only_runs_unpruned(llava, processor, method, options):
    text = processor.tokenizer(["USER: hi there ASSISTANT:"], return_tensors="pt")
    stock = llava()
    model = fastervlm.prune(llava(), method=method, **options)
    with torch.no_grad():
        assert torch.equal(model(**text).logits, stock(**text).logits)
    assert not fastervlm.last_report(model).applied


@pytest.mark.parametrize(("method", "options"), CASES)
def test_labels_forward(llava, batch, method, options):
    model = fastervlm.prune(llava(), method=method, **options)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_ratio_zero_is_the_stock_model(make_llava, batch, method):
    """README: ratio 0 is the unpruned model, for every method, and the report says every patch was kept."""
    model = make_llava(text_layers=text_layers_for(method, {"ratio": 0.0}))
    with torch.no_grad():
        logits = model(**batch).logits
        tokens = model.generate(**batch, max_new_tokens=2, do_sample=False)
        fastervlm.prune(model, method=method, ratio=0.0, **tiny_method_options(method))
        assert torch.equal(model(**batch).logits, logits)
        assert torch.equal(model.generate(**batch, max_new_tokens=2, do_sample=False), tokens)
    report = fastervlm.last_report(model)
    assert report.applied and report.visual_tokens_in == report.visual_tokens_out == 2 * 576
    assert report.merged_tokens == 0
    assert [[v.tolist() for v in views] for views in report.kept_indices] == [[list(range(576))]] * 2


# PyramidDrop's default stages (8, 16, 24) keep >= 8 / L of the tokens on average; 64 of 576 needs an earlier one.
TOKENS_64 = {"pyramiddrop": {"tokens": 64, "layers": (1, 8, 16)}}


@pytest.mark.parametrize(
    ("method", "options"),
    [(m, {**TOKENS_64.get(m, {"tokens": 64}), **tiny_method_options(m)}) for m in sorted(METHODS)],
)
def test_batch_with_a_text_only_sample(llava, processor, method, options):
    """A token budget on a batch that mixes a text-only sample with an image sample: each as if run alone."""
    from fastervlm.tiny import synthetic_images

    texts = ["USER: hi there ASSISTANT:", "USER: <image>\nWhat is it? ASSISTANT:"]
    mixed = processor(images=synthetic_images(1), text=texts, padding=True, return_tensors="pt")
    model = fastervlm.prune(llava(), method=method, **options)
    with torch.no_grad():
        batched = model.generate(**mixed, max_new_tokens=4, do_sample=False)
        assert fastervlm.last_report(model).kept_per_sample[0] == 0
        for i in range(2):
            real = mixed["attention_mask"][i].bool()
            one = {
                "input_ids": mixed["input_ids"][i : i + 1, real],
                "attention_mask": mixed["attention_mask"][i : i + 1, real],
            }
            if i == 1:
                one["pixel_values"] = mixed["pixel_values"]
            alone = model.generate(**one, max_new_tokens=4, do_sample=False)
            assert torch.equal(alone[0, one["input_ids"].shape[1] :], batched[i, mixed["input_ids"].shape[1] :])


def test_token_budget_above_a_samples_image_tokens_keeps_them_all(make_llava, batch):
    """In-LLM budgets are per sample (any number of images): a sample with fewer tokens keeps all it has."""
    model = make_llava(text_layers=TEXT_LAYERS)
    with torch.no_grad():
        expected = model(**batch).logits
        fastervlm.prune(model, method="fastv", tokens=600)
        assert torch.equal(model(**batch).logits, expected)
    assert fastervlm.last_report(model).kept_per_sample == [576, 576]
