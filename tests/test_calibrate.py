"""FitPrune's fit against statistical_analysis.py written out step by step, layer-major as the reference runs it.

The reference never touches fastervlm's runtime: compute_attention_weights from the eager model's attention maps,
then fit_model walks the layers, each one over every sample's stored residual (the decoder layer written out with
the cut between attention and MLP, original positions), counting FLOPs with the reference's formulas and stopping
when the target is reached; a binary search on alpha around it. Two documented choices are encoded the same way:
the last layer cuts nothing, and a count the reference's loop never sets (it reuses a stale one) is n - 1.
"""

from __future__ import annotations

import pytest
import torch

from fastervlm.calibrate import fit_schedule
from fastervlm.tiny import synthetic_images
from tests.conftest import PROMPTS
from tests.reference import merged_embeddings

LAYERS = 4


def deleted(weights, target):
    """The reference's `for i in range(len(sorted)): if kept mass < target: del = max(i - 1, 0); break`."""
    order = torch.argsort(weights)
    total = weights.sum()
    for i in range(len(order)):
        if (total - weights[order[:i]].sum()) < target:
            return order[: max(i - 1, 0)]
    return order[: len(order) - 1]


def reference_fit(model, samples, ratio, epsilon=0.01):
    lm = model.model.language_model
    d, m = lm.config.hidden_size, lm.config.intermediate_size
    token = model.config.image_token_id

    def calculate_flops(n, layers=LAYERS):
        return (4 * n * d**2 + 2 * n**2 * d + 3 * n * m * d) * layers

    def rest_flops(n, layer_idx):
        return n * d**2 + 3 * n * m * d + calculate_flops(n, layers=LAYERS - 1 - layer_idx)

    starts = [int((s["input_ids"][0] == token).nonzero()[0]) for s in samples]
    weightsum_self, weightsum_cross = [], []
    with torch.no_grad():
        for inputs, start in zip(samples, starts, strict=True):
            attentions = model(**inputs, output_attentions=True).attentions
            heads_max = [a.max(dim=1).values.squeeze() for a in attentions]
            weightsum_self.append([w[start : start + 576, start : start + 576].sum().item() / 576 for w in heads_max])
            weightsum_cross.append(
                [w[start + 576 :, start : start + 576].sum().item() / (w.shape[0] - start - 576) for w in heads_max]
            )
    origin = calculate_flops(576)

    def fit_model(alpha):
        flops_reach, used = False, 0
        left = [576] * len(samples)
        residual = [merged_embeddings(model, s) for s in samples]
        positions = [torch.arange(r.shape[1])[None] for r in residual]
        scheme = [0] * LAYERS
        for layer_idx, layer in enumerate(lm.layers):
            forecast = 0
            for v in left:
                used += 3 * v * d**2 + 2 * v**2 * d
                forecast += rest_flops(v, layer_idx)
            if (used + forecast) / len(samples) <= origin * (1 - ratio):
                flops_reach = True
                break
            for i, start in enumerate(starts):
                hidden, n = residual[i], residual[i].shape[1]
                causal = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
                rope = lm.rotary_emb(hidden, position_ids=positions[i])
                with torch.no_grad():
                    attn_output, weights = layer.self_attn(
                        layer.input_layernorm(hidden), position_embeddings=rope, attention_mask=causal
                    )
                headmax = weights.max(dim=1).values.squeeze()
                block = slice(start, start + left[i])
                attn_self = headmax[block, block].sum(dim=0) / left[i]
                attn_cross = headmax[start + left[i] :, block].sum(dim=0) / (n - start - left[i])
                keep = torch.ones(n, dtype=torch.bool)
                if layer_idx < LAYERS - 1:  # documented: the last layer cuts nothing
                    ws, wc = weightsum_self[i][layer_idx], weightsum_cross[i][layer_idx]
                    combined = torch.cat([deleted(attn_self, ws - ws * alpha), deleted(attn_cross, wc - wc * alpha)])
                    values, counts = combined.unique(return_counts=True)
                    keep[values[counts > 1] + start] = False
                scheme[layer_idx] += int((~keep).sum())
                left[i] -= int((~keep).sum())
                with torch.no_grad():
                    hidden = hidden[:, keep] + attn_output[:, keep]
                    residual[i] = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
                positions[i] = positions[i][:, keep]
                used += left[i] * d**2 + 3 * left[i] * m * d
        if not flops_reach and used / len(samples) <= origin * (1 - ratio):
            flops_reach = True
        return flops_reach, [s // len(samples) for s in scheme]

    max_alpha, min_alpha = 1.0, 0.0
    while max_alpha - min_alpha > epsilon:
        mid_alpha = (min_alpha + max_alpha) / 2
        flops_reach, scheme = fit_model(mid_alpha)
        max_alpha, min_alpha = (mid_alpha, min_alpha) if flops_reach else (max_alpha, mid_alpha)
    return tuple(scheme), mid_alpha, flops_reach


def test_fit_matches_statistical_analysis(make_llava, processor):
    """epsilon 0.05 instead of the reference's 0.01: five alphas instead of seven, the same steps."""
    images = synthetic_images(2)
    samples = [dict(processor(images=images[i : i + 1], text=[PROMPTS[i]], return_tensors="pt")) for i in range(2)]
    expected = reference_fit(make_llava(attn_implementation="eager", text_layers=LAYERS), samples, 0.5, 0.05)
    result = fit_schedule(make_llava(text_layers=LAYERS), samples, 0.5, epsilon=0.05)
    assert (result.schedule, result.alpha, result.reached) == expected
    assert sum(result.schedule) > 0


def test_fit_refuses_what_it_cannot_fit(make_llava):
    with pytest.raises(ValueError, match="ratio must be in \\(0, 1\\)"):
        fit_schedule(make_llava(text_layers=LAYERS), [{}], 1.0)
    with pytest.raises(ValueError, match="samples must hold at least one"):
        fit_schedule(make_llava(text_layers=LAYERS), [], 0.5)
