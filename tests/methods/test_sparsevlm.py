"""SparseVLM against a hand-built layer loop that follows the documented algorithm step by step.

The reference never touches fastervlm's runtime: per sample (no padding), it runs the stock decoder layers of an
eager model one by one, reads each pruning layer's attention weights, picks raters, kept tokens and recycled
groups with plain loops, and rebuilds the shorter sequence by hand. It recomputes the whole prefix at every
decode step (no KV cache), with the decisions fixed at prefill, as SparseVLM prunes once.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastervlm
from tests.reference import merged_embeddings, run_layers

LAYERS = 17  # pruning layers 2, 6, 15 each need a later layer
GENERATE = {"max_new_tokens": 5, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def reference_clusters(x: torch.Tensor, clusters: int) -> list[list[int]]:
    """Density peaks (kNN density, distance to the nearest denser token), groups listed centre by centre.

    Equal densities: the earlier token counts as denser (the documented stand-in for the reference's jitter).
    """
    m, dim = x.shape
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt().div(math.sqrt(dim)).tolist()
    density = [math.exp(-sum(d * d for d in sorted(row)[:clusters]) / clusters) for row in dist]
    far = max(max(row) for row in dist)
    denser = [[density[j] > density[i] or (density[j] == density[i] and j < i) for j in range(m)] for i in range(m)]
    parent = [min([dist[i][j] for j in range(m) if denser[i][j]], default=far) for i in range(m)]
    score = [parent[i] * density[i] for i in range(m)]
    centres = sorted(range(m), key=lambda i: -score[i])[:clusters]
    groups = [[] for _ in centres]
    for i in range(m):
        nearest = centres.index(i) if i in centres else min(range(clusters), key=lambda c: dist[i][centres[c]])
        groups[nearest].append(i)
    return groups


def stage_decision(weights, items, visual, rater_items, count, states, recycle=0.3):
    """Kept visual items and recycled groups of one stage, from its eager attention weights (1, H, L, L)."""
    attention = weights[0].mean(dim=0)
    visual_at = [i for i, item in enumerate(items) if item in visual]
    rater_at = [i for i, item in enumerate(items) if item in rater_items]
    relation = attention[rater_at][:, visual_at]
    if isinstance(count, tuple):  # v1: (scale, bias)
        rank = int(torch.linalg.matrix_rank(relation.float()))
        count = len(visual_at) if rank == len(visual_at) else int(rank * count[0] + count[1])
    count = min(count, len(visual_at))
    scores = relation.mean(dim=0)
    order = sorted(range(len(visual_at)), key=lambda i: -float(scores[i]))
    kept = {items[visual_at[i]] for i in order[:count]}
    pruned = order[count:]  # already by descending score
    if count == 0 or not pruned:
        return kept, []
    candidates = pruned[: min(int(len(pruned) * recycle) + 1, len(pruned))]
    groups = reference_clusters(states[[visual_at[i] for i in candidates]], len(candidates) // 10 + 1)
    return kept, [[items[visual_at[candidates[i]]] for i in group] for group in groups]


def sparsevlm_reference(model, inputs, steps, schedule=None, rank_rule=None, layers=(2, 6, 15)):
    """Greedy tokens, per-step logits, kept image indices and per-stage lengths of each sample, no KV cache.

    schedule: kept counts per stage (v1.5); rank_rule: (scale, bias) for v1.
    """
    lm = model.model.language_model
    embeds_all = merged_embeddings(model, inputs)
    results = []
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        embeds = embeds_all[b, real][None]
        is_image = (inputs["input_ids"][b, real] == model.config.image_token_id).tolist()
        image = [i for i, flag in enumerate(is_image) if flag]
        text = [i for i in range(len(is_image)) if i > image[0] and not is_image[i]]
        relevance = torch.softmax(embeds[0, image] @ embeds[0, text].T, dim=-1).mean(dim=0)
        rater_items = {("token", text[j]) for j in range(len(text)) if relevance[j] > relevance.mean()}
        decisions, tokens, logits_per_step, lengths = [], [], [], [embeds.shape[1]]
        with torch.no_grad():
            for _ in range(steps):
                items = [("token", i) for i in range(embeds.shape[1])]
                visual = {("token", i) for i in image}
                hidden, start = embeds, 0
                for s, layer in enumerate(layers):
                    positions = torch.arange(len(items))[None]
                    ones = torch.ones(1, len(items), dtype=torch.bool)
                    hidden, weights = run_layers(lm, hidden, positions, ones, range(start, layer + 1), layer)
                    if len(decisions) == s:
                        count = rank_rule if schedule is None else schedule[s]
                        decisions.append(stage_decision(weights, items, visual, rater_items, count, hidden[0]))
                    kept, groups = decisions[s]
                    last_visual = max(i for i, item in enumerate(items) if item in visual)
                    new_items, rows = [], []
                    for i, item in enumerate(items):
                        if item not in visual or item in kept:
                            new_items.append(item)
                            rows.append(hidden[0, i])
                        if i == last_visual:
                            for c, group in enumerate(groups):
                                new_items.append(("made", s, c))
                                rows.append(torch.stack([hidden[0, items.index(g)] for g in group]).mean(dim=0))
                    visual = (visual & kept) | {("made", s, c) for c in range(len(groups))}
                    items, hidden, start = new_items, torch.stack(rows)[None], layer + 1
                    if len(lengths) <= len(layers):
                        lengths.append(len(items))
                positions = torch.arange(len(items))[None]
                ones = torch.ones(1, len(items), dtype=torch.bool)
                hidden, _ = run_layers(lm, hidden, positions, ones, range(start, len(lm.layers)))
                logits = model.lm_head(lm.norm(hidden[:, -1]))
                tokens.append(int(logits.argmax(-1)))
                logits_per_step.append(logits[0])
                embeds = torch.cat([embeds, lm.embed_tokens(logits.argmax(-1))[:, None]], dim=1)
        survivors = sorted(image.index(item[1]) for item in items if item[0] == "token" and item[1] in image)
        results.append((tokens, logits_per_step, survivors, lengths))
    return results


def assert_matches_reference(model, inputs, expected):
    with torch.no_grad():
        out = model.generate(**inputs, **GENERATE)
    report = fastervlm.last_report(model)
    generated = out.sequences[:, inputs["input_ids"].shape[1] :]
    for b, (tokens, logits, survivors, lengths) in enumerate(expected):
        views = report.kept_indices[b]
        assert torch.cat([v + 576 * i for i, v in enumerate(views)]).tolist() == survivors
        assert generated[b].tolist() == tokens
        for step, want in enumerate(logits):
            torch.testing.assert_close(out.logits[step][b], want, atol=1e-4, rtol=1e-4)
        layers = report.seq_len_per_layer[b]
        assert [layers[0], layers[3], layers[7], layers[16]] == lengths
    return report


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({}, {"schedule": (300, 200, 110)}),
        ({"ratio": 0.9}, {"schedule": (60, 27, 15)}),
        ({"tokens": 128}, {"schedule": (303, 110, 36)}),
        ({"version": "1", "scale": 9.0, "bias": 6.0}, {"rank_rule": (9.0, 6.0)}),
    ],
)
def test_generate_matches_hand_built_layer_loop(make_llava, batch, options, rule):
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    expected = sparsevlm_reference(reference_model, batch, steps=5, **rule)
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm", **options)
    report = assert_matches_reference(model, batch, expected)
    assert report.visual_tokens_out < report.visual_tokens_in and report.merged_tokens > 0
