"""FasterVLM semantics (DESIGN.md section 3) against eager attention maps read from the stock tower."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastervlm.methods.fastervlm import FasterVLMConfig, select
from fastervlm.methods.signals import ViewSignals
from fastervlm.models import adapter_for
from fastervlm.runtime.probe import ClsRowProbe, cls_attention_row
from tests.reference import eager_cls_scores


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_one_row_scores_equal_eager_attention_maps(make_llava, batch, attn):
    model = make_llava(attn_implementation=attn)
    expected = eager_cls_scores(model, batch["pixel_values"])
    probe = ClsRowProbe(adapter_for(model).vision_attention(model, "image", None))
    probe.arm()
    with torch.no_grad():
        model.model.vision_tower(batch["pixel_values"])
    torch.testing.assert_close(probe.scores, expected, atol=1e-6, rtol=1e-5)
    assert probe.scores.shape == (2, 576)


def test_scores_keep_cls_in_the_softmax():
    """Softmax over all 1 + N keys, not renormalised over the patches: rows sum to 1 - p(CLS)."""
    torch.manual_seed(0)
    query, keys = torch.randn(3, 8), torch.randn(3, 5, 8)
    scores = cls_attention_row(query, keys, num_heads=2, scale=0.5)
    per_head = torch.softmax(torch.einsum("bhd,bthd->bht", query.view(3, 2, 4), keys.view(3, 5, 2, 4)) * 0.5, -1)
    torch.testing.assert_close(scores, per_head[:, :, 1:].mean(dim=1))
    assert bool((scores.sum(-1) < 1).all())


def test_select_keeps_top_k_in_raster_order():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.05, 0.3]])
    kept = select(FasterVLMConfig(ratio=0.5), ViewSignals(num_patches=6, cls_attention=scores))
    assert kept.tolist() == [[1, 3, 5]]


@given(st.integers(1, 64), st.floats(0, 1), st.integers(0, 2**16))
def test_select_is_the_top_k_set(n, ratio, seed):
    scores = torch.rand(2, n, generator=torch.Generator().manual_seed(seed))
    kept = select(FasterVLMConfig(ratio=ratio), ViewSignals(num_patches=n, cls_attention=scores))
    k = round((1 - ratio) * n)
    assert kept.shape == (2, k)
    for row, s in zip(kept, scores, strict=True):
        assert bool((row.diff() > 0).all())
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[row] = False
        if 0 < k < n:
            assert float(s[row].min()) >= float(s[dropped].max())


def test_select_without_scores_is_an_error():
    with pytest.raises(RuntimeError, match=r"needs the signal .cls_attention."):
        select(FasterVLMConfig(), ViewSignals(num_patches=4))
