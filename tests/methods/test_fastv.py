"""FastV against a hand-built layer loop: eager attention at layer K-1, layers >= K run on the kept tokens.

The reference never touches fastervlm's runtime: it runs the stock decoder layers one by one with masks built
by hand, re-running the whole pruned prefix at every decode step (no KV cache), with the kept set fixed at
prefill, as FastV prunes once.
"""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.budget import kept_count
from tests.reference import merged_embeddings, run_layers

LAYERS = 4


def fastv_reference(model, inputs, ratio, k_layer, steps, score="last"):
    """Greedy tokens and per-step logits of FastV, recomputing the pruned prefix from scratch at each step."""
    lm = model.model.language_model
    token_ids = model.config.image_token_id
    embeds = merged_embeddings(model, inputs)
    real = inputs["attention_mask"].bool()
    image = inputs["input_ids"] == token_ids
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    kept_image = None
    tokens, logits_per_step = [], []
    with torch.no_grad():
        for _ in range(steps):
            low, weights = run_layers(lm, embeds, positions, real, range(k_layer), keep_weights_of=k_layer - 1)
            if kept_image is None:
                kept_image = []
                for b in range(embeds.shape[0]):
                    if score == "last":
                        received = weights[b, :, -1].mean(dim=0)
                    else:
                        first = int(image[b].long().argmax())
                        rows = [i for i in range(embeds.shape[1]) if i > first and real[b, i] and not image[b, i]]
                        received = weights[b, :, rows].mean(dim=(0, 1))
                    scores = received[: image.shape[1]][image[b]]
                    k = kept_count(int(image[b].sum()), ratio)
                    kept_image.append(scores.topk(k).indices.sort().values)
            keep = ~torch.nn.functional.pad(image, (0, embeds.shape[1] - image.shape[1]))
            for b, kept in enumerate(kept_image):
                keep[b, image[b].nonzero().squeeze(1)[kept]] = True
            rows = [keep[b].nonzero().squeeze(1) for b in range(keep.shape[0])]
            width = max(len(r) for r in rows)
            pad = [width - len(r) for r in rows]
            gather = torch.stack([torch.cat([r.new_zeros(p), r]) for r, p in zip(rows, pad, strict=True)])
            short_real = torch.stack(
                [
                    torch.cat([torch.zeros(p, dtype=torch.bool), real[b][r]])
                    for b, (r, p) in enumerate(zip(rows, pad, strict=True))
                ]
            )
            short = low.gather(1, gather[..., None].expand(-1, -1, low.shape[-1]))
            short_positions = positions.gather(1, gather)
            high, _ = run_layers(lm, short, short_positions, short_real, range(k_layer, len(lm.layers)))
            logits = model.lm_head(lm.norm(high[:, -1]))
            next_token = logits.argmax(-1)
            tokens.append(next_token)
            logits_per_step.append(logits)
            embeds = torch.cat([embeds, lm.embed_tokens(next_token)[:, None]], dim=1)
            real = torch.cat([real, torch.ones(real.shape[0], 1, dtype=torch.bool)], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
    return torch.stack(tokens, dim=1), logits_per_step, kept_image


@pytest.mark.parametrize("ratio", [0.5, 0.9])
@pytest.mark.parametrize("score", ["last", "text_mean"])
def test_generate_matches_hand_built_layer_loop(make_llava, batch, ratio, score):
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected, expected_logits, expected_kept = fastv_reference(reference_model, batch, ratio, 2, steps=5, score=score)
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=ratio, score=score)
    options = {"max_new_tokens": 5, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        out = model.generate(**batch, **options)
    report = fastervlm.last_report(model)
    assert [views[0].tolist() for views in report.kept_indices] == [k.tolist() for k in expected_kept]
    assert torch.equal(out.sequences[:, batch["input_ids"].shape[1] :], expected)
    for got, want in zip(out.logits, expected_logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_report_shows_the_shorter_layers(make_llava, batch):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    report = fastervlm.last_report(model)
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert report.seq_len_per_layer == [[n, n, n - 518, n - 518] for n in real]
    assert report.visual_tokens_in == 1152 and report.visual_tokens_out == 116


def test_cache_holds_full_layers_below_k_and_short_layers_from_k(make_llava, batch):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9)
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    lengths = [layer.keys.shape[-2] for layer in out.past_key_values.layers]
    full = batch["input_ids"].shape[1]
    assert lengths == [full, full, full - 518, full - 518]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ratio_zero_reproduces_stock(make_llava, batch, attn):
    stock = make_llava(attn_implementation=attn, text_layers=LAYERS)
    model = fastervlm.prune(make_llava(attn_implementation=attn, text_layers=LAYERS), method="fastv", ratio=0.0)
    with torch.no_grad():
        expected = stock.generate(**batch, max_new_tokens=6, do_sample=False)
        got = model.generate(**batch, max_new_tokens=6, do_sample=False)
        torch.testing.assert_close(model(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(got, expected)


def test_sdpa_language_model_never_runs_eager(make_llava, batch, no_eager_attention):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.75)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert fastervlm.last_report(model).visual_tokens_out == 2 * 144


def test_contiguous_positions_option(make_llava, batch):
    original = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9)
    contiguous = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9, positions="contiguous")
    with torch.no_grad():
        a = original.generate(
            **batch, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        b = contiguous.generate(
            **batch, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    assert not torch.allclose(a.logits[0], b.logits[0])
    assert [v.tolist() for v in fastervlm.last_report(original).kept_indices[0]] == [
        v.tolist() for v in fastervlm.last_report(contiguous).kept_indices[0]
    ]


def test_unprune_restores_stock(make_llava, batch):
    model = make_llava(text_layers=LAYERS)
    with torch.no_grad():
        expected = model(**batch).logits
    fastervlm.unprune(fastervlm.prune(model, method="fastv", ratio=0.9))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"layer": 0}, "layer must be an int >= 1"),
        ({"layer": 4}, "layer must be in \\[1, 3\\] for this 4-layer language model"),
        ({"score": "first"}, "score must be one of last, text_mean"),
        ({"positions": "shifted"}, "positions must be one of original, contiguous"),
    ],
)
def test_bad_options(make_llava, options, match):
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", **options)


def test_ragged_batch_matches_hand_built_layer_loop(make_llava, ragged_batch):
    """Two images in one sample, one in the other: each keeps its own share, re-padded at layer K."""
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected, _, expected_kept = fastv_reference(reference_model, ragged_batch, 0.9, 2, steps=4)
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9)
    with torch.no_grad():
        out = model.generate(**ragged_batch, max_new_tokens=4, do_sample=False)
    report = fastervlm.last_report(model)
    assert [len(k) for k in expected_kept] == [115, 58]
    assert report.kept_per_sample == [115, 58]
    assert torch.equal(out[:, ragged_batch["input_ids"].shape[1] :], expected)


def test_forward_without_positions_scores_every_sample(make_llava, batch):
    """forward() leaves position_ids to the model, whose rotary tables then have batch 1: every row must still score."""
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fastv", ratio=0.9)
    twice = {key: value[[0, 0]] for key, value in batch.items()}
    with torch.no_grad():
        model(**twice)
    first, second = (views[0].tolist() for views in fastervlm.last_report(model).kept_indices)
    assert first == second and first != list(range(58))
