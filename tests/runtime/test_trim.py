"""The vision tower stops at the feature layer while pruned, and nothing any output needs is skipped."""

from __future__ import annotations

import pytest
import torch

import fastervlm


def layer_runs(model) -> tuple[list[int], list]:
    """Calls of each vision encoder layer's MLP (a skipped layer never reaches it)."""
    counts = [0] * len(model.model.vision_tower.encoder.layers)
    handles = []
    for i, layer in enumerate(model.model.vision_tower.encoder.layers):

        def count(module, args, output, i=i) -> None:
            counts[i] += 1

        handles.append(layer.mlp.register_forward_hook(count))
    return counts, handles


@pytest.mark.parametrize("method, options", [("fastervlm", {}), ("fastv", {"layer": 1})])
def test_layers_after_the_feature_layer_skip_while_pruned(tiny, batch, method, options):
    """vision_feature_layer=-2: the last layer never runs in a pruned forward or generate, and runs again after."""
    last = len(tiny.model.vision_tower.encoder.layers) - 1
    with torch.no_grad():
        stock = tiny(**batch).logits
    counts, _ = layer_runs(tiny)
    fastervlm.prune(tiny, method=method, ratio=0.0, **options)
    with torch.no_grad():
        pruned = tiny(**batch).logits
        tiny.generate(**batch, max_new_tokens=2, do_sample=False)
    assert counts[last] == 0 and counts[last - 1] == 2
    torch.testing.assert_close(pruned, stock)  # ratio 0: the skipped layer changed nothing
    with torch.no_grad():
        tiny.model.vision_tower(batch["pixel_values"])  # outside the encoder call: the whole tower
    assert counts[last] == 1
    fastervlm.unprune(tiny)
    with torch.no_grad():
        tiny(**batch)
    assert counts[last] == 2 and "forward" not in vars(tiny.model.vision_tower.encoder.layers[last])


def test_a_scored_layer_after_the_feature_layer_still_runs(tiny, batch):
    """score_layer=-1 scores the last layer's [CLS] row: that layer must run, and the scores must exist."""
    last = len(tiny.model.vision_tower.encoder.layers) - 1
    counts, _ = layer_runs(tiny)
    fastervlm.prune(tiny, method="fastervlm", ratio=0.9, score_layer=-1)
    with torch.no_grad():
        tiny(**batch)
    assert counts[last] == 1
    assert fastervlm.last_report(tiny).applied
