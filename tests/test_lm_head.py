"""The LM head runs on the last position only at a pruned generate's prefill, as on the stock model."""

from __future__ import annotations

import pytest
import torch

import fastervlm


@pytest.mark.parametrize("method, options", [("fastervlm", {}), ("fastv", {"layer": 1})])
def test_pruned_generate_prefill_projects_the_last_position_only(tiny, batch, method, options):
    """transformers 5.23's generate passes logits_to_keep=1 when forward's signature names it: our wrapped
    forward must keep that signature, or the prefill would price the whole vocabulary at every position."""
    rows = []
    tiny.lm_head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[1]))
    fastervlm.prune(tiny, method=method, ratio=0.9, **options)
    with torch.no_grad():
        tiny.generate(**batch, max_new_tokens=3, do_sample=False)
    assert rows == [1, 1, 1]
