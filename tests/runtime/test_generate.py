"""generate() modes on a pruned model: each runs exactly or is refused at entry with its reason (issue 15)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, StaticCache

import fastervlm

FASTV_LAYERS = 4


@pytest.fixture(scope="module")
def pruned():
    from fastervlm.tiny import tiny_llava

    return fastervlm.prune(tiny_llava(text_layers=2), method="fastervlm", ratio=0.9)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"cache_implementation": "static"}, "cache_implementation='static' is not supported on a pruned model"),
        ({"cache_implementation": "offloaded"}, "cache_implementation='offloaded' is not supported"),
        ({"cache_implementation": "offloaded_static"}, "cache_implementation='offloaded_static' is not supported"),
        ({"prefill_chunk_size": 8}, "prefill_chunk_size is not supported on a pruned model"),
        ({"static_cache": True}, "past_key_values=StaticCache is not supported on a pruned model"),
    ],
)
def test_unsupported_generate_modes_are_refused_at_entry(pruned, batch, options, match):
    if options.pop("static_cache", False):
        options["past_key_values"] = StaticCache(config=pruned.config, max_cache_len=2000)
    with pytest.raises(ValueError, match=match), torch.no_grad():
        pruned.generate(**batch, max_new_tokens=2, do_sample=False, **options)


def test_static_cache_in_forward_is_refused(pruned, batch):
    with pytest.raises(ValueError, match="past_key_values=StaticCache is not supported"), torch.no_grad():
        pruned(**batch, past_key_values=StaticCache(config=pruned.config, max_cache_len=2000))


def test_continuous_batching_is_refused(pruned):
    with pytest.raises(ValueError, match="generate_batch \\(continuous batching, paged attention\\) is not supported"):
        pruned.generate_batch(inputs=[[1, 2, 3]])


def test_an_empty_dynamic_cache_is_the_default_run(pruned, batch):
    with torch.no_grad():
        expected = pruned.generate(**batch, max_new_tokens=3, do_sample=False)
        got = pruned.generate(**batch, max_new_tokens=3, do_sample=False, past_key_values=DynamicCache())
    assert torch.equal(got, expected)


def continued(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """A 6-token run, and the same run as 3 tokens then 3 more from the returned cache (stock usage)."""
    with torch.no_grad():
        whole = model.generate(**batch, max_new_tokens=6, do_sample=False)
        first = model.generate(**batch, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(first.sequences[:, -3:])], dim=1)
        rest = model.generate(
            input_ids=first.sequences, attention_mask=mask, past_key_values=first.past_key_values, max_new_tokens=3
        )
    return whole, rest


@pytest.mark.parametrize(("method", "samples"), [("fastervlm", 1), ("fastervlm", 2), ("visionzip", 2), ("fastv", 2)])
def test_continuation_equals_one_run(make_llava, batch, method, samples):
    """generate() from the returned cache, given the whole text so far, as the stock model continues: the cache
    of a pre-LLM method holds the shortened prompt (samples shortened by different amounts at batch 2), FastV's
    the full prompt below layer K."""
    model = fastervlm.prune(make_llava(text_layers=FASTV_LAYERS), method=method, ratio=0.75)
    whole, rest = continued(model, {k: v[:samples] for k, v in batch.items()})
    assert torch.equal(rest, whole)


def test_continuing_a_foreign_cache_or_a_short_text_is_refused(pruned, batch):
    with torch.no_grad():
        first = pruned.generate(**batch, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
        with pytest.raises(ValueError, match="needs input_ids with the whole text so far"):
            pruned.generate(input_ids=first.sequences[:, -3:], past_key_values=first.past_key_values, max_new_tokens=1)
        foreign = DynamicCache()
        foreign.update(torch.zeros(2, 4, 3, 16), torch.zeros(2, 4, 3, 16), 0)
        with pytest.raises(ValueError, match="no pruned prefill of this model made it"):
            pruned.generate(input_ids=first.sequences, past_key_values=foreign, max_new_tokens=1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"use_cache": False}, "use_cache=False is not supported with 'fastv'"),
        ({"prompt_lookup_num_tokens": 3}, "assisted generation \\(prompt_lookup_num_tokens\\) is not supported"),
    ],
)
def test_in_llm_modes_that_would_select_again_are_refused(make_llava, batch, options, match):
    """Without a cache (or with draft tokens in the first forward) FastV would score from another last token."""
    model = fastervlm.prune(make_llava(text_layers=FASTV_LAYERS), method="fastv", ratio=0.75)
    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(ValueError, match=match), torch.no_grad():
        model.generate(**one, max_new_tokens=2, do_sample=False, **options)
