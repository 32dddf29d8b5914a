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
from fastervlm.methods.signals import LlmSignals
from fastervlm.methods.sparsevlm import SparseVLMConfig, select
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
    """Kept visual items and recycled groups of one stage, from its eager attention weights (1, H, L, L).

    count: the stage's schedule entry (v1.5), or (scale, bias) for v1's rank rule.
    """
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

    schedule: kept counts per stage (v1.5), or one such tuple per sample; rank_rule: (scale, bias) for v1.
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
                        per_sample = schedule if schedule is None or isinstance(schedule[0], int) else schedule[b]
                        count = rank_rule if per_sample is None else per_sample[s]
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


def test_ragged_batch_matches_hand_built_layer_loop(make_llava, ragged_batch):
    """Two images pool into one sample's visual tokens (a schedule for 1152); recycled tokens follow the last one."""
    reference_model = make_llava(attn_implementation="eager", text_layers=LAYERS)
    schedules = [(604, 265, 109), (302, 132, 54)]
    expected = sparsevlm_reference(reference_model, ragged_batch, steps=5, schedule=schedules)
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm", ratio=0.75)
    report = assert_matches_reference(model, ragged_batch, expected)
    assert [len(views) for views in report.kept_indices] == [2, 1]


def test_report_and_cache_show_the_schedule(make_llava, batch):
    """Default budget (192 of 576): 300 + 9 recycled, 200 + 4, 110 + 3 visual tokens after layers 2, 6, 15."""
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm")
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    report = fastervlm.last_report(model)
    real = batch["attention_mask"].sum(dim=1).tolist()
    visual = [576] * 3 + [309] * 4 + [204] * 9 + [113]
    assert report.seq_len_per_layer == [[n - 576 + v for v in visual] for n in real]
    assert report.visual_tokens_in == 1152 and report.visual_tokens_out == 226
    assert report.merged_tokens == 226 - sum(report.kept_per_sample)
    full = batch["input_ids"].shape[1]
    assert [layer.keys.shape[-2] for layer in out.past_key_values.layers] == [full - 576 + v for v in visual]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ratio_zero_reproduces_stock(make_llava, batch, attn):
    stock = make_llava(attn_implementation=attn, text_layers=LAYERS)
    model = fastervlm.prune(make_llava(attn_implementation=attn, text_layers=LAYERS), method="sparsevlm", ratio=0.0)
    with torch.no_grad():
        expected = stock.generate(**batch, max_new_tokens=6, do_sample=False)
        got = model.generate(**batch, max_new_tokens=6, do_sample=False)
        torch.testing.assert_close(model(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(got, expected)
    assert fastervlm.last_report(model).merged_tokens == 0


def test_ratio_one_leaves_no_visual_token_after_the_first_stage(make_llava, batch):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm", ratio=1.0)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    report = fastervlm.last_report(model)
    assert report.visual_tokens_out == 0
    assert [layers[3] for layers in report.seq_len_per_layer] == [n - 576 for n in batch["attention_mask"].sum(1)]


def test_sdpa_language_model_never_runs_eager(make_llava, batch, no_eager_attention):
    model = fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm", tokens=64)
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert fastervlm.last_report(model).visual_tokens_out == 2 * (17 + 1)  # 17 kept + 1 recycled


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tokens": 192}, (300, 200, 110)),
        ({"tokens": 128}, (303, 110, 36)),
        ({"tokens": 64}, (66, 30, 17)),
        ({"ratio": 0.0}, (576, 576, 576)),
        ({"ratio": 0.25}, (472, 435, 401)),
        ({"ratio": 0.5}, (369, 294, 226)),
        ({"ratio": 0.75}, (302, 132, 54)),
        ({"ratio": 0.9}, (60, 27, 15)),
        ({"ratio": 0.95}, (30, 14, 8)),
        ({"ratio": 1.0}, (0, 0, 0)),
        ({"schedule": (400, 100, 10)}, (400, 100, 10)),
    ],
)
def test_budget_maps_to_a_schedule(options, expected):
    """The documented table: the reference schedules at 64/128/192 of 576, linear in between, scaled with n."""
    config = SparseVLMConfig(**options)
    assert config.stage_counts(576) == expected
    doubled = config.stage_counts(1152)
    if "ratio" in options:  # twice the image tokens, twice the counts (up to rounding)
        assert all(abs(d - 2 * e) <= 1 for d, e in zip(doubled, expected, strict=True))


def test_default_budget_is_the_references_192_schedule():
    assert SparseVLMConfig().stage_counts(576) == (300, 200, 110)
    assert SparseVLMConfig().stage_counts(1152) == (600, 400, 220)


def signals(attention: torch.Tensor, stage: int = 0) -> LlmSignals:
    """One sample whose input embeddings are all zero, so every text row is a rater (equal relevance)."""
    queries, visual = attention.shape
    states = torch.arange(visual * 2, dtype=torch.float).view(visual, 2)
    return LlmSignals(
        stage=stage,
        query_attention=[attention],
        visual_states=[states],
        image_embeds=[torch.zeros(576, 4)],
        query_embeds=[torch.zeros(queries, 4)],
    )


def test_v1_keeps_everything_when_the_rater_matrix_has_full_column_rank():
    chosen = select(SparseVLMConfig(version="1", scale=0.5), signals(torch.eye(3)))[0]
    assert chosen.kept.tolist() == [0, 1, 2] and chosen.tokens.shape == (0, 2)


def test_v1_counts_rank_times_scale_plus_bias_and_recycles_the_best_pruned():
    attention = torch.tensor([[0.5, 0.1, 0.2, 0.0, 0.3], [0.5, 0.1, 0.2, 0.0, 0.3], [0.1, 0.6, 0.0, 0.2, 0.0]])
    chosen = select(SparseVLMConfig(version="1", scale=1.0, bias=0.5), signals(attention))[0]  # rank 2 -> keep 2
    assert chosen.kept.tolist() == [0, 1]
    assert chosen.tokens.tolist() == [[8.0, 9.0]]  # one candidate (int(3 x 0.3) + 1): token 4, scored 0.2


def test_recycle_zero_makes_no_tokens():
    attention = torch.rand(2, 576)
    chosen = select(SparseVLMConfig(tokens=64, recycle=0.0), signals(attention))[0]
    assert len(chosen.kept) == 66 and chosen.tokens.shape == (0, 2)


def test_raters_are_the_text_rows_more_relevant_than_average():
    from fastervlm.methods.sparsevlm import raters

    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    assert raters(image, text).tolist() == [0]
    assert raters(image, torch.zeros(3, 2)).tolist() == [0, 1, 2]  # none above the mean: every text row rates


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"version": "2"}, "version must be one of 1.5, 1"),
        ({"layers": (6, 2, 15)}, "layers must be ascending ints >= 0"),
        ({"layers": (2, 6, 16)}, "layers must be in \\[0, 15\\] for this 17-layer language model"),
        ({"layers": (2, 6)}, "the reference schedules have 3 stages"),
        ({"schedule": (300, 200)}, "schedule must hold one int >= 0 per pruning layer"),
        ({"ratio": 0.5, "tokens": 64}, "give at most one of ratio, tokens, schedule"),
        ({"ratio": 1.5}, "ratio must be a number in \\[0, 1\\]"),
        ({"version": "1"}, "version='1' sets each stage's count .* give scale"),
        ({"version": "1", "scale": 2.0, "ratio": 0.5}, "version='1' .* not ratio"),
        ({"scale": 2.0}, "scale and bias apply to version='1' only"),
        ({"recycle": 1.5}, "recycle must be a number in \\[0, 1\\]"),
    ],
)
def test_bad_options(make_llava, options, match):
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(make_llava(text_layers=LAYERS), method="sparsevlm", **options)


@pytest.mark.parametrize("clusters", [1, 2, 5])
def test_density_peak_merge_matches_loop_reference(clusters):
    """Random tokens plus exact duplicates (tied densities): same groups, means in centre order."""
    from fastervlm.methods.recycling import density_peak_merge

    tokens = torch.randn(40, 8, generator=torch.Generator().manual_seed(clusters))
    tokens[20:26] = tokens[:6]
    groups = reference_clusters(tokens, clusters)
    expected = torch.stack([tokens[group].mean(dim=0) for group in groups])
    torch.testing.assert_close(density_peak_merge(tokens, clusters), expected)
