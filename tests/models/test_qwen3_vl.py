"""Qwen3-VL: the Qwen2-VL contract plus deepstack, whose per-token features must follow the kept set.

Before the LLM, the reference is the stock model fed the hand-shortened sequence with the stock deepstack
features cut to the same rows; inside it (FastV), a layer loop that adds each deepstack layer's features to the
visual tokens still present after that layer, as the stock text model does for the full sequence.
"""

from __future__ import annotations

import pytest
import torch

import fastervlm
from fastervlm.budget import kept_count
from fastervlm.tiny import synthetic_images, synthetic_video
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT, tiny_qwen3_vl, tiny_qwen3_vl_processor
from tests.models.test_qwen2_vl import STEPS, eager_received, generate, shortened
from tests.reference import merged_embeddings, run_layers

PROMPTS = [IMAGE_PROMPT + "What is it?", "Hi " + IMAGE_PROMPT + "Describe this one."]


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen3_vl_processor()


@pytest.fixture(scope="module")
def batch(processor):
    return processor(images=synthetic_images(2), text=PROMPTS, padding=True, return_tensors="pt")


def test_kept_sets_and_generate_with_pruned_deepstack(batch):
    eager, stock, model = tiny_qwen3_vl(attn_implementation="eager"), tiny_qwen3_vl(), tiny_qwen3_vl()
    expected = [s.topk(round(0.5 * len(s))).indices.sort().values for s in eager_received(eager, batch)]
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, batch)
        kept = [views[0] for views in fastervlm.last_report(model).kept_indices]
        reference = generate(stock, shortened(stock, batch, kept))
    assert [k.tolist() for k in kept] == [k.tolist() for k in expected]
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for got, want in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def fastv_with_deepstack(model, inputs, ratio: float, k_layer: int = 1):
    """FastV's layer loop (tests/models/test_qwen2_vl_llm.py) with the stock deepstack additions: after layer i,
    deepstack layer i's feature of every visual token still in the sequence is added to its hidden state."""
    lm = model.model.language_model
    embeds = merged_embeddings(model, inputs)
    deepstack = [
        torch.cat(layer)
        for layer in model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).deepstack_features
    ]
    real = inputs["attention_mask"].bool()
    image = inputs["input_ids"] == model.config.image_token_id
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=real
    )

    def add_deepstack(hidden, layer, visual, rows):
        if layer < len(deepstack):
            hidden = hidden.clone()
            hidden[visual] = hidden[visual] + deepstack[layer][rows]
        return hidden

    with torch.no_grad():
        hidden, weights = run_layers(lm, embeds, positions, real, range(k_layer - 1), keep_weights_of=None)
        all_rows = torch.arange(int(image.sum()))
        for layer in range(k_layer - 1):
            hidden = add_deepstack(hidden, layer, image, all_rows)
        hidden, weights = run_layers(lm, hidden, positions, real, [k_layer - 1], keep_weights_of=k_layer - 1)
        hidden = add_deepstack(hidden, k_layer - 1, image, all_rows)
        scores = [weights[b, :, -1].mean(dim=0)[image[b]] for b in range(len(hidden))]
        kept = [s.topk(kept_count(len(s), ratio)).indices.sort().values for s in scores]
        keep = ~image
        offsets = [0, *image.sum(dim=1).cumsum(0).tolist()]
        kept_rows = []
        for b, k in enumerate(kept):
            keep[b, image[b].nonzero().squeeze(1)[k]] = True
            kept_rows.append(k + offsets[b])
        rows = [keep[b].nonzero().squeeze(1) for b in range(len(keep))]
        width = max(len(r) for r in rows)
        gather = torch.stack([torch.cat([r.new_zeros(width - len(r)), r]) for r in rows])
        short_real = torch.stack(
            [torch.cat([torch.zeros(width - len(r), dtype=torch.bool), real[b][r]]) for b, r in enumerate(rows)]
        )
        short_image = torch.stack(
            [torch.cat([torch.zeros(width - len(r), dtype=torch.bool), image[b][r]]) for b, r in enumerate(rows)]
        )
        short = hidden.gather(1, gather[..., None].expand(-1, -1, hidden.shape[-1]))
        short_positions = positions.gather(2, gather.expand(3, -1, -1))
        for layer in range(k_layer, len(lm.layers)):
            short, _ = run_layers(lm, short, short_positions, short_real, [layer])
            short = add_deepstack(short, layer, short_image & short_real, torch.cat(kept_rows))
        logits = model.lm_head(lm.norm(short[:, -1]))
    return logits, kept


def test_fastv_keeps_deepstack_on_the_kept_tokens(batch):
    """FastV at layer 1 while deepstack still adds features after layers 0 and 1: the first token's logits and the
    kept sets equal the hand-built loop's."""
    expected_logits, expected_kept = fastv_with_deepstack(tiny_qwen3_vl(attn_implementation="eager"), batch, 0.5)
    model = fastervlm.prune(tiny_qwen3_vl(), "fastv", ratio=0.5, layer=1)
    with torch.no_grad():
        out = generate(model, batch)
    report = fastervlm.last_report(model)
    assert [views[0].tolist() for views in report.kept_indices] == [k.tolist() for k in expected_kept]
    torch.testing.assert_close(out.logits[0], expected_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("method", "options"), [("fastervlm", {"ratio": 0.0}), ("fastv", {"ratio": 0.0, "layer": 1})])
def test_ratio_zero_is_stock(method, options, batch):
    stock, model = tiny_qwen3_vl(), fastervlm.prune(tiny_qwen3_vl(), method, **options)
    with torch.no_grad():
        expected, got = generate(stock, batch), generate(model, batch)
    assert torch.equal(got.sequences, expected.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.logits, expected.logits, strict=True))


@pytest.mark.parametrize(
    ("method", "options"), [("fastervlm", {"ratio": 0.5}), ("sparsevlm", {"layers": (0, 1), "schedule": (8, 4)})]
)
def test_batched_equals_one_by_one(method, options, processor, batch):
    model = fastervlm.prune(tiny_qwen3_vl(), method, **options)
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        for b, (image, prompt) in enumerate(zip(synthetic_images(2), PROMPTS, strict=True)):
            alone = model.generate(
                **processor(images=[image], text=[prompt], return_tensors="pt"), max_new_tokens=STEPS, do_sample=False
            )
            assert torch.equal(alone[0, -STEPS:], together[b, -STEPS:])


def test_videos_with_timestamps_keep_each_frame_groups_top_k(processor):
    """Qwen3-VL writes a timestamp before each frame group, so a video's tokens come in runs; each frame group
    keeps the top half of its own received attention, and generate equals the stock model on the shortened
    sequence with the deepstack features cut alike."""
    videos = [synthetic_video(frames=4), synthetic_video(frames=4, seed=1, size=(200, 300))]
    prompts = ["<|video_pad|>What happens?", "Hi <|video_pad|>Why?"]
    inputs = processor(videos=videos, text=prompts, padding=True, return_tensors="pt")
    eager, stock, model = tiny_qwen3_vl(attn_implementation="eager"), tiny_qwen3_vl(), tiny_qwen3_vl()
    expected, rows = [], []
    for scores, t in zip(eager_received(eager, inputs, "video"), inputs["video_grid_thw"][:, 0].tolist(), strict=True):
        groups = scores.view(t, -1)
        kept = groups.topk(round(0.5 * groups.shape[1]), dim=-1).indices.sort(dim=-1).values
        expected.append(kept)
        rows.append((kept + torch.arange(t).unsqueeze(1) * groups.shape[1]).flatten())
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, inputs)
        views = fastervlm.last_report(model).kept_indices
        reference = generate(stock, shortened(stock, inputs, rows, "video"))
    assert [[v.tolist() for v in vs] for vs in views] == [e.tolist() for e in expected]
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for got, want in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
