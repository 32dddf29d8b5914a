"""random, pool and VisionZip against references built in the test from the stock model's own tensors."""

from __future__ import annotations

import math

import pytest
import torch

import fastervlm
from fastervlm.budget import kept_count
from fastervlm.methods.pool import pooled_grid
from tests.reference import feature_layer_states, inputs_with_features

GENERATE = {"max_new_tokens": 6, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}


def assert_generate_matches(model, stock, batch, per_image):
    short = inputs_with_features(stock, batch, per_image, stock.config.pad_token_id)
    with torch.no_grad():
        expected = stock.generate(**short, **GENERATE)
        got = model.generate(**batch, **GENERATE)
    assert torch.equal(
        got.sequences[:, batch["input_ids"].shape[1] :], expected.sequences[:, short["input_ids"].shape[1] :]
    )
    for a, b in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def project(stock, rows: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return stock.model.multi_modal_projector(rows)


@pytest.mark.parametrize("seed", [0, 3])
def test_random_is_seeded_and_matches_hand_built_sequence(make_llava, batch, seed):
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="random", ratio=0.9, seed=seed)
    kept = torch.rand(576, generator=torch.Generator().manual_seed(seed)).topk(58).indices.sort().values
    _, features, _ = feature_layer_states(stock, batch["pixel_values"])
    per_image = [project(stock, f[1:][kept]) for f in features]
    assert_generate_matches(model, stock, batch, per_image)
    assert [v[0].tolist() for v in fastervlm.last_report(model).kept_indices] == [kept.tolist()] * 2


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """Adaptive average pooling's bins: [floor(i * size / out), ceil((i + 1) * size / out))."""
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


@pytest.mark.parametrize(("ratio", "grid"), [(0.5, (16, 18)), (0.75, (12, 12)), (0.9, (7, 8))])
def test_pool_matches_explicit_bin_averages(make_llava, batch, ratio, grid):
    assert pooled_grid(kept_count(576, ratio), (24, 24)) == grid
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="pool", ratio=ratio)
    _, features, _ = feature_layer_states(stock, batch["pixel_values"])
    per_image = []
    for f in features:
        patches = f[1:].view(24, 24, -1)
        pooled = [
            patches[r0:r1, c0:c1].mean(dim=(0, 1))
            for r0, r1 in adaptive_bins(24, grid[0])
            for c0, c1 in adaptive_bins(24, grid[1])
        ]
        per_image.append(project(stock, torch.stack(pooled)))
    assert_generate_matches(model, stock, batch, per_image)
    report = fastervlm.last_report(model)
    assert report.visual_tokens_out == report.merged_tokens == 2 * grid[0] * grid[1]


def visionzip_reference(stock, pixel_values, dominant: int, contextual: int) -> tuple[list, list]:
    """dvlab-research/VisionZip's CLIPVisionTower_VisionZip.forward, step by step, on the stock tower's tensors.

    Its `dominant` argument is ours minus one ([CLS] is the other). Dominant: [CLS] + the top patches by [CLS]
    attention summed over heads, selected by a mask so they stay in sequence order. Contextual: the rest, in
    order; every step-th of them a target; the others assigned (one-hot) to the target whose head-averaged key is
    most cosine-similar; contextual token = target hidden + (assigned hidden summed) / count clamped to >= 1.
    """
    before, hidden, attentions = feature_layer_states(stock, pixel_values)
    layer = stock.model.vision_tower.encoder.layers[stock.config.vision_feature_layer]
    heads = layer.self_attn.num_heads
    with torch.no_grad():
        metric = layer.self_attn.k_proj(layer.layer_norm1(before))
    metric = metric.view(*metric.shape[:2], heads, -1).mean(dim=2)  # raw_key_states.mean(1): heads averaged
    batch, tokens, dim = hidden.shape
    dominant_num = dominant - 1
    topk = attentions[:, :, 0, 1:].sum(dim=1).topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros(batch, 1, dtype=topk.dtype), topk], dim=1)
    mask = torch.ones(batch, tokens, dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden.masked_select(~mask.unsqueeze(-1)).view(batch, dominant_num + 1, dim)
    metric_filtered = metric[mask].view(batch, tokens - dominant_num - 1, metric.shape[2])
    hidden_filtered = hidden.masked_select(mask.unsqueeze(-1)).view(batch, tokens - dominant_num - 1, dim)
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)
    step = max(1, metric_normalized.shape[1] // contextual)
    target_indices = torch.arange(0, metric_normalized.shape[1], step)[:contextual]
    others = ~torch.isin(torch.arange(metric_normalized.shape[1]), target_indices)
    similarity = torch.bmm(metric_normalized[:, others], metric_normalized[:, target_indices].transpose(1, 2))
    assign = torch.zeros(batch, int(others.sum()), contextual).scatter_(2, similarity.argmax(dim=2, keepdim=True), 1)
    counts = assign.sum(dim=1).clamp(min=1).unsqueeze(-1)
    aggregated = torch.bmm(assign.transpose(1, 2), hidden_filtered[:, others]) / counts
    contextual_tokens = hidden_filtered[:, target_indices] + aggregated
    # The misreading this test must reject: each group's mean with its target included.
    group_mean = (hidden_filtered[:, target_indices] + aggregated * counts) / (assign.sum(dim=1).unsqueeze(-1) + 1)
    assert not torch.allclose(group_mean, contextual_tokens, atol=1e-3)
    out = torch.cat([dominant_tokens, contextual_tokens], dim=1)
    kept = topk.sort(dim=1).values - 1
    return [project(stock, o) for o in out], list(kept)


@pytest.mark.parametrize(("options", "split"), [({"tokens": 64}, (54, 10)), ({"ratio": 0.75}, (122, 22))])
def test_visionzip_matches_reference_algorithm(make_llava, batch, options, split):
    stock = make_llava()
    model = fastervlm.prune(make_llava(), method="visionzip", **options)
    assert fastervlm.api.config_of(model).split(576) == split
    per_image, kept = visionzip_reference(stock, batch["pixel_values"], *split)
    assert_generate_matches(model, stock, batch, per_image)
    report = fastervlm.last_report(model)
    assert [v[0].tolist() for v in report.kept_indices] == [k.tolist() for k in kept]
    assert report.visual_tokens_out == 2 * sum(split) and report.merged_tokens == 2 * (split[1] + 1)


@pytest.mark.parametrize("method", ["random", "pool", "visionzip"])
def test_ratio_zero_and_unprune(make_llava, batch, method):
    stock, model = make_llava(), make_llava()
    fastervlm.prune(model, method=method, ratio=0.0)
    with torch.no_grad():
        expected = stock.generate(**batch, max_new_tokens=4, do_sample=False)
        if method == "random":
            assert torch.equal(model.generate(**batch, max_new_tokens=4, do_sample=False), expected)
        fastervlm.unprune(model)
        assert torch.equal(model(**batch).logits, stock(**batch).logits)


def test_visionzip_split_options():
    from fastervlm.methods.visionzip import VisionZipConfig

    assert VisionZipConfig(ratio=None, tokens=128).split(576) == (108, 20)
    assert VisionZipConfig(ratio=None, tokens=192).split(576) == (162, 30)
    assert VisionZipConfig(dominant=40, contextual=8).split(576) == (40, 8)
    with pytest.raises(ValueError, match="give both dominant and contextual"):
        VisionZipConfig(dominant=40)
