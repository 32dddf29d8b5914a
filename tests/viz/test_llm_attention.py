"""The hook-read last-token rows against an eager run's own attention maps."""

from __future__ import annotations

import pytest
import torch

from fastervlm.tiny import tiny_llava
from fastervlm.viz.llm_attention import last_token_image_attention


def test_rows_match_the_eager_attention_maps_of_a_same_seed_model(batch):
    eager = tiny_llava(seed=0, text_layers=3, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = eager(**batch, output_attentions=True).attentions  # per layer (batch, heads, L, L)
    rows = last_token_image_attention(tiny_llava(seed=0, text_layers=3).eval(), batch)
    image = batch["input_ids"] == eager.config.image_token_id
    assert len(rows) == 2
    for b, got in enumerate(rows):
        expected = torch.stack([layer[b, :, -1].mean(dim=0)[image[b]] for layer in attentions])
        assert got.shape == (3, int(image[b].sum()))
        torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)


def test_a_sample_without_image_tokens_is_refused(batch, processor):
    inputs = processor(text=["USER: hello ASSISTANT:"], return_tensors="pt")
    with pytest.raises(ValueError, match="image tokens"):
        last_token_image_attention(tiny_llava(text_layers=2), inputs)
