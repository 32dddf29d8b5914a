"""DART against a hand-built layer loop that follows the reference's get_retained_image_token step by step.

The reference never touches fastervlm's runtime: per sample (no padding, batch 1 as the reference asserts), it runs
the stock decoder layers one by one, computes layer K-1's keys from that layer's input (norm, k_proj, rotary
embedding), picks pivots and the tokens they take with the reference's own sets and lists (absolute sequence
indices, `for item in list(indices_set)`), and re-runs the kept prefix at every decode step (no KV cache) with the
kept token's original position ids, as the reference does.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import fastervlm
from tests.reference import merged_embeddings, run_layers

LAYERS = 4
GENERATE = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def retained_image_tokens(keys, state, start, length, max_num_trunction, image_pivots=4, text_pivots=4):
    """The reference's get_retained_image_token for one sample: keys (L, heads * head_dim), state (L, dim)."""
    token_topk = math.ceil(max_num_trunction // (image_pivots + text_pivots))
    image_norm = torch.norm(keys[start : start + length], p=1, dim=-1)
    text_norm = torch.norm(keys[start + length :], p=1, dim=-1)
    image_indices = (image_norm.topk(image_pivots).indices + start).tolist()
    query_indices = (text_norm.topk(text_pivots).indices + start + length).tolist()
    indices_set = set(image_indices + query_indices)
    valid_indices = set(range(start, start + length)) - set(image_indices)
    valid_indices_list = list(valid_indices)
    for item in list(indices_set):
        cos_sim = -torch.nn.functional.cosine_similarity(state[item], state[valid_indices_list], dim=-1)
        top = [valid_indices_list[i] for i in cos_sim.topk(token_topk).indices]
        indices_set.update(top)
        valid_indices.difference_update(top)
        valid_indices_list = list(valid_indices)
    indices_set.difference_update(query_indices)
    return sorted(indices_set)


def dart_reference(model, inputs, max_num_trunction, k_layer, steps):
    """Per sample: greedy tokens, per-step logits and kept image indices (0-based within the image)."""
    lm = model.model.language_model
    embeds_all = merged_embeddings(model, inputs)
    results = []
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        embeds = embeds_all[b, real][None]
        image = (inputs["input_ids"][b, real] == model.config.image_token_id).nonzero().squeeze(1)
        start, length = int(image[0]), len(image)
        keep, tokens, logits_per_step = None, [], []
        with torch.no_grad():
            for _ in range(steps):
                n = embeds.shape[1]
                positions, ones = torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool)
                low, _ = run_layers(lm, embeds, positions, ones, range(k_layer - 1))
                if keep is None:
                    attention = lm.layers[k_layer - 1].self_attn
                    normed = lm.layers[k_layer - 1].input_layernorm(low)
                    keys = attention.k_proj(normed).view(1, n, -1, attention.head_dim).transpose(1, 2)
                    cos, sin = lm.rotary_emb(low, position_ids=positions)
                    keys = apply_rotary_pos_emb(keys, keys, cos, sin)[1]
                    keys = keys.repeat_interleave(attention.config.num_attention_heads // keys.shape[1], dim=1)
                    keys = keys.permute(0, 2, 1, 3).reshape(1, n, -1)[0]
                low, _ = run_layers(lm, low, positions, ones, [k_layer - 1])
                if keep is None:
                    retained = retained_image_tokens(keys, lm.norm(low)[0], start, length, max_num_trunction)
                    keep = list(range(start)) + retained + list(range(start + length, n))
                rows = torch.tensor(keep + list(range(embeds_all[b, real].shape[0], n)))  # then generated tokens
                short = low[:, rows]
                ones = torch.ones(1, len(rows), dtype=torch.bool)
                high, _ = run_layers(lm, short, rows[None], ones, range(k_layer, LAYERS))
                logits = model.lm_head(lm.norm(high[:, -1]))
                tokens.append(int(logits.argmax(-1)))
                logits_per_step.append(logits[0])
                embeds = torch.cat([embeds, lm.embed_tokens(logits.argmax(-1))[:, None]], dim=1)
        results.append((tokens, logits_per_step, [i - start for i in retained]))
    return results


@pytest.mark.parametrize(("options", "max_num_trunction"), [({}, 128), ({"ratio": 0.9}, 58)])
def test_generate_matches_hand_built_layer_loop(make_llava, batch, options, max_num_trunction):
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected = dart_reference(reference_model, batch, max_num_trunction, k_layer=2, steps=GENERATE["max_new_tokens"])
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="dart", **options)
    with torch.no_grad():
        out = model.generate(**batch, **GENERATE)
    report = fastervlm.last_report(model)
    generated = out.sequences[:, batch["input_ids"].shape[1] :]
    for b, (tokens, logits, kept) in enumerate(expected):
        assert report.kept_indices[b][0].tolist() == kept
        assert len(kept) == 4 + 8 * (max_num_trunction // 8)
        assert generated[b].tolist() == tokens
        for step, want in enumerate(logits):
            torch.testing.assert_close(out.logits[step][b], want, atol=1e-4, rtol=1e-4)


def test_sdpa_language_model_never_runs_eager_and_ratio_one_keeps_none(make_llava, batch, no_eager_attention):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="dart", ratio=1.0)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    report = fastervlm.last_report(model)
    assert report.visual_tokens_out == 0
    assert [layers[2] for layers in report.seq_len_per_layer] == [n - 576 for n in batch["attention_mask"].sum(1)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"layer": 0}, "layer must be an int >= 1"),
        ({"layer": 4}, "layer must be in \\[1, 3\\] for this 4-layer language model"),
        ({"image_pivots": 0, "text_pivots": 0}, "image_pivots \\+ text_pivots must be >= 1"),
        ({"text_pivots": -1}, "text_pivots must be an int >= 0"),
        ({"ratio": 0.5, "tokens": 64}, "give exactly one of ratio or tokens"),
    ],
)
def test_bad_options(make_llava, options, match):
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(make_llava(text_layers=LAYERS), method="dart", **options)
