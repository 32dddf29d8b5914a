"""The public contract: prune / generate / forward / report / unprune on a tiny LLaVA-1.5."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import fastervlm
from fastervlm.budget import kept_count
from tests.reference import real_positions, reference_kept, short_inputs

RATIOS = [0.0, 0.5, 0.9, 0.95, 1.0]
ATTN = ["sdpa", "eager"]


def real_rows(logits: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    return [row[m.bool()] for row, m in zip(logits, mask, strict=True)]


def new_tokens(out: torch.Tensor, inputs: dict) -> torch.Tensor:
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("attn", ATTN)
def test_ratio_zero_reproduces_stock_exactly(make_llava, batch, attn):
    model = make_llava(attn_implementation=attn)
    with torch.no_grad():
        logits = model(**batch).logits
        tokens = model.generate(**batch, max_new_tokens=6, do_sample=False)
    fastervlm.prune(model, method="fastervlm", ratio=0.0)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, logits)
        assert torch.equal(model.generate(**batch, max_new_tokens=6, do_sample=False), tokens)
    report = fastervlm.last_report(model)
    assert report.applied and report.visual_tokens_in == report.visual_tokens_out == 2 * 576


def test_unprune_restores_stock(tiny, batch):
    with torch.no_grad():
        expected = tiny(**batch).logits
    keys, hooks = set(tiny.state_dict()), hook_ids(tiny)
    fastervlm.prune(tiny, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        assert tiny(**batch).logits.shape[1] < expected.shape[1]
    assert hook_ids(tiny) != hooks
    assert fastervlm.unprune(tiny) is tiny
    with torch.no_grad():
        assert torch.equal(tiny(**batch).logits, expected)
    assert set(tiny.state_dict()) == keys and not hasattr(tiny, "_fastervlm")
    for module in (tiny, tiny.model):
        assert "forward" not in vars(module) and "get_image_features" not in vars(module)
    assert hook_ids(tiny) == hooks


def hook_ids(model: torch.nn.Module) -> set[tuple[str, int]]:
    """transformers installs its own output-capturing hooks lazily; only ours must come and go."""
    return {
        (name, id(h))
        for name, m in model.named_modules()
        for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    }


def test_prune_returns_same_object(tiny):
    assert fastervlm.prune(tiny, ratio=0.5) is tiny


@pytest.mark.parametrize("attn", ATTN)
@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.95])
def test_forward_equals_hand_built_short_sequence(make_llava, batch, attn, ratio):
    stock, model = make_llava(attn_implementation=attn), make_llava(attn_implementation=attn)
    kept = reference_kept(stock, batch["pixel_values"], ratio)
    short = short_inputs(stock, batch, kept, pad_id=stock.config.pad_token_id)
    positions = real_positions(batch["attention_mask"])
    with torch.no_grad():
        expected = stock(**short, position_ids=real_positions(short["attention_mask"])).logits
        fastervlm.prune(model, method="fastervlm", ratio=ratio)
        got = model(**batch, position_ids=positions).logits
    report = fastervlm.last_report(model)
    assert [views[0].tolist() for views in report.kept_indices] == kept.tolist()
    for g, e in zip(real_rows(got, report_mask(model)), real_rows(expected, short["attention_mask"]), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def report_mask(model) -> torch.Tensor:
    """The compact attention mask of the last prefill: where the LLM saw real tokens."""
    return fastervlm.api.installation(model)._plan.mask


@pytest.mark.parametrize("ratio", RATIOS)
def test_generate_token_identical_to_hand_built_sequence(make_llava, batch, ratio):
    stock, model = make_llava(), make_llava()
    kept = reference_kept(stock, batch["pixel_values"], ratio)
    short = short_inputs(stock, batch, kept, pad_id=stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=ratio)
    options = {"max_new_tokens": 8, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**batch, **options)
    assert got.sequences.shape[1] == batch["input_ids"].shape[1] + 8
    assert torch.equal(got.sequences[:, : batch["input_ids"].shape[1]], batch["input_ids"])
    assert torch.equal(new_tokens(got.sequences, batch), new_tokens(expected.sequences, short))
    for step_got, step_expected in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(step_got, step_expected, atol=1e-4, rtol=1e-4)


def test_sampling_matches_hand_built_sequence_under_same_seed(make_llava, batch):
    stock, model = make_llava(), make_llava()
    short = short_inputs(stock, batch, reference_kept(stock, batch["pixel_values"], 0.75), stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=0.75)
    options = {"max_new_tokens": 8, "do_sample": True, "top_k": 20, "temperature": 1.5}
    with torch.no_grad():
        torch.manual_seed(7)
        expected = stock.generate(**short, **options)
        torch.manual_seed(7)
        got = model.generate(**batch, **options)
    assert torch.equal(new_tokens(got, batch), new_tokens(expected, short))


def test_kv_cache_decode_equals_full_recompute(tiny, batch):
    fastervlm.prune(tiny, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        cached = tiny.generate(**batch, max_new_tokens=8, do_sample=False)
        uncached = tiny.generate(**batch, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_manual_decode_with_returned_cache(tiny, batch):
    """A caller driving the cache by hand (full-length mask, as generate keeps it) gets the pruned model."""
    fastervlm.prune(tiny, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        generated = tiny.generate(**batch, max_new_tokens=2, do_sample=False)
        first = tiny(**batch, use_cache=True)
        step = first.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(step)], dim=1)
        second = tiny(input_ids=step, attention_mask=mask, past_key_values=first.past_key_values)
    assert torch.equal(step.squeeze(1), generated[:, -2])
    assert torch.equal(second.logits[:, -1].argmax(-1), generated[:, -1])


def test_beam_search_matches_hand_built_sequence(make_llava, batch):
    stock, model = make_llava(), make_llava()
    short = short_inputs(stock, batch, reference_kept(stock, batch["pixel_values"], 0.9), stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    options = {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**batch, **options)
    assert torch.equal(got[:, batch["input_ids"].shape[1] :], expected[:, short["input_ids"].shape[1] :])


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_batched_equals_one_by_one(make_llava, batch, ratio):
    model = fastervlm.prune(make_llava(), method="fastervlm", ratio=ratio)
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=6, do_sample=False)
        batched_kept = fastervlm.last_report(model).kept_indices
        for i in range(2):
            one = {k: v[i : i + 1] for k, v in batch.items()}
            real = one["attention_mask"].bool()[0]
            one = {
                "input_ids": one["input_ids"][:, real],
                "attention_mask": one["attention_mask"][:, real],
                "pixel_values": one["pixel_values"],
            }
            alone = model.generate(**one, max_new_tokens=6, do_sample=False)
            assert torch.equal(fastervlm.last_report(model).kept_indices[0][0], batched_kept[i][0])
            assert torch.equal(alone[0, one["input_ids"].shape[1] :], batched[i, batch["input_ids"].shape[1] :])


def test_ragged_images_per_sample(make_llava, ragged_batch):
    """Samples that lose different numbers of tokens are re-padded; each still matches its own run."""
    stock, model = make_llava(), make_llava()
    kept = reference_kept(stock, ragged_batch["pixel_values"], 0.9)
    short = short_inputs(stock, ragged_batch, kept, pad_id=stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = stock.generate(**short, max_new_tokens=6, do_sample=False)
        got = model.generate(**ragged_batch, max_new_tokens=6, do_sample=False)
    report = fastervlm.last_report(model)
    assert [len(views) for views in report.kept_indices] == [2, 1]
    assert report.kept_per_sample == [116, 58]
    assert torch.equal(new_tokens(got, ragged_batch), new_tokens(expected, short))


def test_labels_give_the_pruned_models_loss(make_llava, batch):
    stock, model = make_llava(), make_llava()
    kept = reference_kept(stock, batch["pixel_values"], 0.9)
    short = short_inputs(stock, batch, kept, pad_id=stock.config.pad_token_id)
    token = stock.config.image_token_id
    labels = batch["input_ids"].masked_fill((batch["input_ids"] == token) | (batch["attention_mask"] == 0), -100)
    short_labels = short["input_ids"].masked_fill((short["input_ids"] == token) | (short["attention_mask"] == 0), -100)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = stock(**short, labels=short_labels, position_ids=real_positions(short["attention_mask"])).loss
        got = model(**batch, labels=labels, position_ids=real_positions(batch["attention_mask"])).loss
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_right_padded_labels_batch(make_llava, processor):
    """Training-style right padding: compaction pads on the right too, and the loss stays finite and exact."""
    from fastervlm.tiny import synthetic_images

    texts = ["USER: <image>\nWhat is in the picture? ASSISTANT: a cat", "USER: <image>\nHi ASSISTANT: no"]
    processor.tokenizer.padding_side = "right"
    try:
        inputs = processor(images=synthetic_images(2), text=texts, padding=True, return_tensors="pt")
    finally:
        processor.tokenizer.padding_side = "left"
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model = fastervlm.prune(make_llava(), method="fastervlm", ratio=0.9)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    plan = fastervlm.api.installation(model)._plan
    assert bool((plan.mask[:, 0] == 1).all()), "right-padded rows must stay left-aligned"
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9, 0.95, 1.0])
def test_report_counts(tiny, batch, ratio):
    fastervlm.prune(tiny, method="fastervlm", ratio=ratio)
    with torch.no_grad():
        tiny.generate(**batch, max_new_tokens=2, do_sample=False)
    report = fastervlm.last_report(tiny)
    k = kept_count(576, ratio)
    assert report.applied and report.method == "fastervlm"
    assert report.visual_tokens_in == 1152 and report.visual_tokens_out == 2 * k
    assert [[len(v) for v in views] for views in report.kept_indices] == [[k], [k]]
    for views in report.kept_indices:
        assert bool((views[0].diff() > 0).all()) and (k == 0 or 0 <= int(views[0].min()) <= int(views[0].max()) < 576)
    real = batch["attention_mask"].sum(dim=1)
    assert report.llm_input_lengths == (real - (576 - k)).tolist()


def test_tokens_budget_equals_ratio_budget(make_llava, batch):
    by_ratio = fastervlm.prune(make_llava(), method="fastervlm", ratio=0.9)
    by_tokens = fastervlm.prune(make_llava(), method="fastervlm", tokens=58)
    with torch.no_grad():
        a, b = by_ratio(**batch).logits, by_tokens(**batch).logits
    assert torch.equal(a, b)
    assert fastervlm.last_report(by_tokens).visual_tokens_out == 116


def test_last_report_is_none_before_a_forward_and_refuses_an_unpruned_model(tiny):
    with pytest.raises(ValueError, match=r"model is not pruned; call fastervlm.prune"):
        fastervlm.last_report(tiny)
    assert fastervlm.last_report(fastervlm.prune(tiny, method="fastervlm", ratio=0.9)) is None
    with pytest.raises(ValueError, match="model is not pruned"):
        fastervlm.last_report(fastervlm.unprune(tiny))


def test_ratio_one_keeps_no_visual_token(tiny, batch):
    fastervlm.prune(tiny, method="fastervlm", ratio=1.0)
    with torch.no_grad():
        out = tiny.generate(**batch, max_new_tokens=4, do_sample=False)
    report = fastervlm.last_report(tiny)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4
    assert report.visual_tokens_out == 0 and report.kept_per_sample == [0, 0]


def test_text_only_batch_runs_unpruned_and_says_so(tiny, processor):
    text = processor.tokenizer(["USER: hello ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        expected = tiny(**text).logits
        fastervlm.prune(tiny, method="fastervlm", ratio=0.9)
        got = tiny(**text).logits
    report = fastervlm.last_report(tiny)
    assert torch.equal(got, expected)
    assert not report.applied and "no image tokens" in report.note


def test_sdpa_vision_tower_never_builds_attention_maps(tiny, batch, monkeypatch):
    """The score comes from one query row: no eager kernel, no attention map requested."""
    import transformers.models.clip.modeling_clip as clip

    def refuse(*args, **kwargs):
        raise AssertionError("the eager attention kernel ran")

    monkeypatch.setattr(clip, "eager_attention_forward", refuse)
    fastervlm.prune(tiny, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        tiny.generate(**batch, max_new_tokens=2, do_sample=False)
    assert tiny.model.vision_tower.config._attn_implementation == "sdpa"
    assert fastervlm.last_report(tiny).visual_tokens_out == 116


def test_eager_and_sdpa_keep_the_same_tokens(make_llava, batch):
    kept = {}
    for attn in ATTN:
        model = fastervlm.prune(make_llava(attn_implementation=attn), method="fastervlm", ratio=0.9)
        with torch.no_grad():
            model(**batch)
        kept[attn] = [v[0].tolist() for v in fastervlm.last_report(model).kept_indices]
    assert kept["sdpa"] == kept["eager"]


def test_last_report_is_none_before_any_forward(tiny):
    fastervlm.prune(tiny, ratio=0.5)
    assert fastervlm.last_report(tiny) is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ratio": 1.5}, "ratio must be a number in \\[0, 1\\]"),
        ({"ratio": -0.1}, "ratio must be a number in \\[0, 1\\]"),
        ({"tokens": 577}, "tokens must be in \\[0, 576\\]"),
        ({"tokens": -1}, "tokens must be an int >= 0"),
        ({"ratio": 0.5, "tokens": 10}, "exactly one of ratio or tokens"),
        ({"method": "nope"}, "unknown method 'nope'; choose one of: .*fastervlm"),
        ({"method": "fastervlm", "colour": 1}, "unknown option\\(s\\) \\['colour'\\]"),
        ({"score_layer": 0}, "score_layer must select an encoder layer"),
        ({"mode": "paper"}, "unknown option.* \\['mode'\\] .*LlavaForConditionalGeneration's own options: none"),
    ],
)
def test_bad_arguments_name_the_argument(tiny, options, match):
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(tiny, **options)
    assert not hasattr(tiny, "_fastervlm")


def test_prune_twice_is_refused(tiny):
    fastervlm.prune(tiny, ratio=0.5)
    with pytest.raises(ValueError, match=r"already pruned; call fastervlm\.unprune"):
        fastervlm.prune(tiny, ratio=0.9)


def test_unsupported_model_class(processor):
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=len(processor.tokenizer),
    )
    with pytest.raises(TypeError, match=r"LlamaForCausalLM is not supported; supported classes: .*Llava"):
        fastervlm.prune(LlamaForCausalLM(config), ratio=0.5)


def test_full_feature_strategy_is_refused(make_llava):
    model = make_llava()
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(ValueError, match="vision_feature_select_strategy must be 'default'"):
        fastervlm.prune(model, ratio=0.5)


def test_unpruned_model_has_no_report(tiny):
    with pytest.raises(ValueError, match="model is not pruned"):
        fastervlm.last_report(tiny)


@pytest.mark.parametrize(("method", "layers"), [("fastervlm", 2), ("fastv", 4)])
def test_interleaved_generations_keep_their_own_plans(make_llava, batch, method, layers):
    """Two prefills, then decode steps on the first cache: each cache keeps the plan of its own prefill."""
    model = fastervlm.prune(make_llava(text_layers=layers), method=method, ratio=0.9)
    first = {k: v[:1] for k, v in batch.items()}
    second = {k: v[1:] for k, v in batch.items()}

    def step(prefill, inputs):
        token = prefill.logits[:, -1:].argmax(-1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(token)], dim=1)
        return model(input_ids=token, attention_mask=mask, past_key_values=prefill.past_key_values).logits

    with torch.no_grad():
        alone = step(model(**first, use_cache=True), first)
        a = model(**first, use_cache=True)
        model(**second, use_cache=True)
        interleaved = step(a, first)
    torch.testing.assert_close(interleaved, alone)
