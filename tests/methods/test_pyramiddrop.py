"""PyramidDrop against a hand-built layer loop that follows the reference's pdrop_forward / pdrop_rank_drop.

The reference never touches fastervlm's runtime: per sample (no padding), before each stage layer it applies that
layer's input norm and q/k projections to the whole current sequence, rotates them at the current positions,
takes the last instruction token's softmax attention averaged over heads, keeps the top int(N x ratio_list[s + 1])
image tokens in order and renumbers positions 0..len-1. It re-runs the prefix at every decode step (no KV cache)
with the decisions fixed at prefill; new tokens continue the shortened positions, as the reference's decode does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import fastervlm
from tests.reference import merged_embeddings, run_layers

LAYERS = 4
STAGES = (1, 2, 3)
GENERATE = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def rank(lm, layer_index, hidden, image_index, image_tokens, keep_length):
    """pdrop_rank_drop's ranking for one unpadded sample: indices into the current image block that stay."""
    layer = lm.layers[layer_index]
    attention = layer.self_attn
    n = hidden.shape[1]
    normed = layer.input_layernorm(hidden)
    query = attention.q_proj(normed).view(1, n, -1, attention.head_dim).transpose(1, 2)
    keys = attention.k_proj(normed).view(1, n, -1, attention.head_dim).transpose(1, 2)
    cos, sin = lm.rotary_emb(hidden, position_ids=torch.arange(n)[None])
    query, keys = apply_rotary_pos_emb(query, keys, cos, sin)
    keys = keys.repeat_interleave(query.shape[1] // keys.shape[1], dim=1)  # repeat_kv
    last = n - 1  # prompt_total_len - 1: the last instruction token, which sees every key
    weights = torch.matmul(query[0, :, last : last + 1], keys[0].transpose(1, 2)) / math.sqrt(attention.head_dim)
    weights = torch.softmax(weights, dim=-1)
    scores = weights.mean(dim=0)[:, image_index : image_index + image_tokens].mean(dim=0)
    return scores.topk(keep_length).indices.sort().values


def pdrop_reference(model, inputs, ratio_list, steps):
    """Per sample: greedy tokens, per-step logits, kept image indices after the last stage, lengths per stage."""
    lm = model.model.language_model
    embeds_all = merged_embeddings(model, inputs)
    results = []
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        prompt = embeds_all[b, real][None]
        image = (inputs["input_ids"][b, real] == model.config.image_token_id).nonzero().squeeze(1)
        image_index, total = int(image[0]), len(image)
        decisions, tokens, logits_per_step, lengths = [], [], [], []
        embeds = prompt
        with torch.no_grad():
            for step in range(steps):
                hidden, kept_from, n = embeds, torch.arange(total), embeds.shape[1]
                for layer_index in range(LAYERS):
                    if layer_index in STAGES:
                        stage = STAGES.index(layer_index)
                        image_tokens = int(total * ratio_list[stage])
                        keep_length = int(total * ratio_list[stage + 1])
                        if len(decisions) == stage:
                            decisions.append(rank(lm, layer_index, hidden, image_index, image_tokens, keep_length))
                        top = decisions[stage] + image_index
                        start = image_index + image_tokens
                        hidden = torch.cat([hidden[:, :image_index], hidden[:, top], hidden[:, start:]], dim=1)
                        kept_from = kept_from[decisions[stage]]
                        if step == 0:
                            lengths.append(hidden.shape[1])
                    n = hidden.shape[1]
                    hidden, _ = run_layers(
                        lm, hidden, torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool), [layer_index]
                    )
                logits = model.lm_head(lm.norm(hidden[:, -1]))
                tokens.append(int(logits.argmax(-1)))
                logits_per_step.append(logits[0])
                embeds = torch.cat([embeds, lm.embed_tokens(logits.argmax(-1))[:, None]], dim=1)
        results.append((tokens, logits_per_step, kept_from.tolist(), lengths))
    return results


def lam_of(fraction: float) -> float:
    """Mean kept per layer over 4 one-layer stages, (1 + l + l^2 + l^3) / 4 = fraction, solved by numpy."""
    roots = np.roots([1.0, 1.0, 1.0, 1.0 - 4 * fraction])
    return float(next(r.real for r in roots if abs(r.imag) < 1e-9 and 0 <= r.real <= 1))


@pytest.mark.parametrize(("options", "lam"), [({}, 0.5), ({"ratio": 0.5}, lam_of(288 / 576))])
def test_generate_matches_hand_built_layer_loop(make_llava, batch, options, lam):
    ratio_list = [1.0, lam, lam**2, lam**3]
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected = pdrop_reference(reference_model, batch, ratio_list, steps=GENERATE["max_new_tokens"])
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="pyramiddrop", layers=STAGES, **options)
    with torch.no_grad():
        out = model.generate(**batch, **GENERATE)
    report = fastervlm.last_report(model)
    generated = out.sequences[:, batch["input_ids"].shape[1] :]
    for b, (tokens, logits, kept, lengths) in enumerate(expected):
        assert report.kept_indices[b][0].tolist() == sorted(kept)
        assert report.seq_len_per_layer[b][1:] == lengths
        assert generated[b].tolist() == tokens
        for step, want in enumerate(logits):
            torch.testing.assert_close(out.logits[step][b], want, atol=1e-4, rtol=1e-4)


def test_budget_maps_to_lambda_so_the_mean_per_layer_matches():
    """32 layers, stages at 8 / 16 / 24: the mean of 576 x lambda^s over the four 8-layer stages is the budget."""
    config = fastervlm.methods.resolve_config("pyramiddrop", {"ratio": 0.5})
    counts = config.stage_counts(576, 32)
    assert counts == [int(576 * lam_of(0.5) ** s) for s in (1, 2, 3)] == [313, 170, 92]
    assert config.stage_counts(576, 32) != fastervlm.methods.resolve_config("pyramiddrop", {}).stage_counts(576, 32)
    assert fastervlm.methods.resolve_config("pyramiddrop", {}).stage_counts(576, 32) == [288, 144, 72]


def test_sdpa_language_model_never_runs_eager(make_llava, batch, no_eager_attention):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="pyramiddrop", lam=0.5, layers=STAGES)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    report = fastervlm.last_report(model)
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert report.seq_len_per_layer == [[n, n - 288, n - 432, n - 504] for n in real]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ratio": 0.9}, "keeps at least 25.0% of the image tokens .* layers=\\(2, 8, 16\\)"),
        ({"layers": (1, 2, 4)}, "layers must be in \\[1, 3\\] for this 4-layer language model"),
        ({"layers": (2, 1)}, "layers must be ascending ints >= 1"),
        ({"ratio": 0.5, "lam": 0.5}, "give at most one of ratio, tokens, lam"),
        ({"lam": 1.5}, "lam must be in \\[0, 1\\]"),
    ],
)
def test_bad_options(make_llava, options, match):
    options = {"layers": STAGES, **options}
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(make_llava(text_layers=LAYERS), method="pyramiddrop", **options)
