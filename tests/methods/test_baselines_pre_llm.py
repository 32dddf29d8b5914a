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
    """The reference algorithm, step by step: [CLS] + top (dominant - 1) patches by head-summed [CLS]
    attention, then every step-th remaining token as a target and the rest averaged into the most
    key-similar target (keys averaged over heads)."""
    before, features, attentions = feature_layer_states(stock, pixel_values)
    layer = stock.model.vision_tower.encoder.layers[stock.config.vision_feature_layer]
    heads = layer.self_attn.num_heads
    with torch.no_grad():
        keys = layer.self_attn.k_proj(layer.layer_norm1(before))
    keys = keys.view(*keys.shape[:2], heads, -1).mean(dim=2)
    out, kept_all = [], []
    for f, a, k in zip(features, attentions, keys, strict=True):
        cls_attention = a.sum(dim=0)[0, 1:]
        kept = cls_attention.topk(dominant - 1).indices.sort().values
        tokens = [f[0], *f[1:][kept]]
        remaining = [i for i in range(576) if i not in set(kept.tolist())]
        step = max(1, len(remaining) // contextual)
        targets = remaining[::step][:contextual]
        others = [i for i in remaining if i not in set(targets)]
        normed = k[1:] / k[1:].norm(dim=-1, keepdim=True)
        groups = {t: [t] for t in targets}
        for o in others:
            best = max(targets, key=lambda t: float(normed[o] @ normed[t]))
            groups[best].append(o)
        tokens += [f[1:][groups[t]].mean(dim=0) for t in targets]
        out.append(project(stock, torch.stack(tokens)))
        kept_all.append(kept)
    return out, kept_all


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
