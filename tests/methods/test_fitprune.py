"""FitPrune against a hand-built layer loop that follows the reference's fitprune_llama.py step by step.

The reference never touches fastervlm's runtime: per sample (no padding, batch 1 as the reference runs), each
layer is written out as the reference's LlamaDecoderLayer + LlamaAttention run it (eager attention weights), and
where the schedule removes tokens, the head-max map's self (visual rows) and cross (rows after the image) column
means are multiplied and the smallest are cut from the attention output and the residual before the MLP; position
ids follow the kept tokens. The prefix is re-run at every decode step (no KV cache) with the decisions fixed at
prefill.
"""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.methods.fitprune import SCHEDULES, FitPruneConfig, remaining
from fastervlm.runtime import llm
from tests.reference import merged_embeddings

LAYERS = 4
SCHEDULE = (100, 200, 50, 0)
GENERATE = {"max_new_tokens": 4, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def layer_forward(layer, lm, hidden, positions, delete, image_start, left, decided):
    """The reference's decoder layer with FitPrune's cut between attention and MLP; returns hidden, positions, cut."""
    n = hidden.shape[1]
    causal = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
    residual = hidden
    normed = layer.input_layernorm(hidden)
    rope = lm.rotary_emb(hidden, position_ids=positions)
    attn_output, weights = layer.self_attn(normed, position_embeddings=rope, attention_mask=causal)
    keep = torch.ones(n, dtype=torch.bool)
    if delete and left > 0:
        if decided is None:
            headmax = weights.max(dim=1).values.squeeze()
            visual = slice(image_start, image_start + left)
            attn_self = headmax[visual, visual].sum(dim=0) / left
            attn_cross = headmax[image_start + left :, visual].sum(dim=0) / (headmax.shape[0] - image_start - left)
            decided = torch.sort(attn_self * attn_cross, dim=-1).indices[:delete]
        keep[decided + image_start] = False
    hidden = residual[:, keep] + attn_output[:, keep]
    hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hidden, positions[:, keep], decided


def fitprune_reference(model, inputs, schedule, steps):
    """Per sample: greedy tokens, per-step logits, kept image indices (within the image) and lengths per layer."""
    lm = model.model.language_model
    embeds_all = merged_embeddings(model, inputs)
    results = []
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        embeds = embeds_all[b, real][None]
        image = (inputs["input_ids"][b, real] == model.config.image_token_id).nonzero().squeeze(1)
        start = int(image[0])
        decisions, tokens, logits_per_step, lengths = [None] * LAYERS, [], [], None
        with torch.no_grad():
            for _ in range(steps):
                hidden, positions, left = embeds, torch.arange(embeds.shape[1])[None], len(image)
                survivors = torch.arange(len(image))
                seen = []
                for index in range(LAYERS):
                    seen.append(hidden.shape[1])
                    hidden, positions, decisions[index] = layer_forward(
                        lm.layers[index], lm, hidden, positions, schedule[index], start, left, decisions[index]
                    )
                    if decisions[index] is not None:
                        gone = torch.zeros(left, dtype=torch.bool)
                        gone[decisions[index]] = True
                        survivors, left = survivors[~gone], left - int(gone.sum())
                lengths = lengths or seen
                logits = model.lm_head(lm.norm(hidden[:, -1]))
                tokens.append(int(logits.argmax(-1)))
                logits_per_step.append(logits[0])
                embeds = torch.cat([embeds, lm.embed_tokens(logits.argmax(-1))[:, None]], dim=1)
        results.append((tokens, logits_per_step, survivors.tolist(), lengths))
    return results


def test_generate_matches_hand_built_layer_loop(make_llava, batch):
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected = fitprune_reference(reference_model, batch, SCHEDULE, steps=GENERATE["max_new_tokens"])
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fitprune", schedule=SCHEDULE)
    with torch.no_grad():
        out = model.generate(**batch, **GENERATE)
    report = fastervlm.last_report(model)
    generated = out.sequences[:, batch["input_ids"].shape[1] :]
    for b, (tokens, logits, kept, lengths) in enumerate(expected):
        assert report.kept_indices[b][0].tolist() == kept and len(kept) == 576 - 350
        assert report.seq_len_per_layer[b] == lengths
        assert generated[b].tolist() == tokens
        for step, want in enumerate(logits):
            torch.testing.assert_close(out.logits[step][b], want, atol=1e-4, rtol=1e-4)


def test_scores_in_row_chunks_equal_scores_at_once(make_llava, batch, monkeypatch):
    """The runtime scores FitPrune's hundreds of rows in chunks (LLaVA-NeXT's would be gigabytes at once)."""
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fitprune", schedule=SCHEDULE)
    with torch.no_grad():
        whole = model(**batch).logits
        kept = [v.tolist() for v in fastervlm.last_report(model).kept_indices[0]]
        monkeypatch.setattr(llm, "SCORES_PER_CHUNK", 4 * 650 * 37)  # 37 rows of 4 heads x ~650 keys per chunk
        torch.testing.assert_close(model(**batch).logits, whole)
    assert [v.tolist() for v in fastervlm.last_report(model).kept_indices[0]] == kept


def test_fitted_schedules_are_the_anchors_and_budgets_set_the_mean_per_layer():
    """A budget equal to a fitted schedule's mean (90 %: 56.0 of 576 per layer) gives exactly that schedule; other
    budgets interpolate the two bracketing schedules so the mean per layer is the budget."""
    assert sum(remaining(SCHEDULES[90])) == 56 * 32
    fractions = FitPruneConfig(tokens=56).kept_per_layer(576)
    assert [round(f * 576) for f in fractions] == remaining(SCHEDULES[90])
    for ratio, tokens in [(0.25, 432), (0.5, 288), (0.75, 144), (0.9, 58), (0.95, 29)]:
        assert sum(FitPruneConfig(ratio=ratio).kept_per_layer(576)) * 576 / 32 == pytest.approx(tokens)
    assert FitPruneConfig(ratio=1.0).kept_per_layer(576) == [0.0] * 32


def test_sdpa_language_model_never_runs_eager(make_llava, batch, no_eager_attention):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="fitprune", schedule=SCHEDULE)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert fastervlm.last_report(model).seq_len_per_layer == [[n, n - 100, n - 300, n - 350] for n in real]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "fitted schedules are for 32-layer language models .* give schedule=\\(...\\) with 4 removal counts"),
        ({"schedule": (1, 2)}, "schedule must hold one count per layer of this 4-layer language model"),
        ({"schedule": (300, 300, 0, 0)}, "removing at most 576 in all"),
        ({"schedule": (0, 0, 0, 5)}, "schedule removes no token before the last layer"),
        ({"ratio": 0.5, "schedule": SCHEDULE}, "give at most one of ratio, tokens, schedule, alpha"),
        ({"alpha": 0.5}, "alpha and attention_mass go together"),
        ({"alpha": 0.5, "attention_mass": ((1.0, 1.0),)}, "one \\(self, cross\\) pair per layer of this 4-layer"),
    ],
)
def test_bad_options(make_llava, options, match):
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(make_llava(text_layers=LAYERS), method="fitprune", **options)
