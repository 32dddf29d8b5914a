"""LLaVA-OneVision: per-view received attention on SigLIP, the stock anyres layout, and the runtime contract.

The references use the stock model only: eager SigLIP maps for the score, the stock packing run on index-valued
features for the layout (which patch each packed row holds, -1 for a newline), and the stock model fed the kept
packed rows and a hand-shortened prompt for generate.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BatchFeature
from transformers.modeling_outputs import BaseModelOutputWithPooling

import fastervlm
from fastervlm.api import config_of
from fastervlm.budget import kept_count
from fastervlm.tiny import synthetic_images, synthetic_video
from fastervlm.tiny.llava_onevision import VIEW_PATCHES, tiny_llava_onevision, tiny_llava_onevision_processor

PROMPTS = ["USER: <image>\nWhat is it? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"]
STEPS = 4
LAYERS = 3


@pytest.fixture(scope="module")
def processor():
    return tiny_llava_onevision_processor()


@pytest.fixture(scope="module")
def batch(processor) -> BatchFeature:
    """A 400 x 300 image (3 x 3 crops, unpadded rows cut) and a square one; prompts of different lengths."""
    return processor(images=synthetic_images(2), text=PROMPTS, padding=True, return_tensors="pt")


def views_of(model, inputs) -> tuple[torch.Tensor, list[int]]:
    """Each image's real views (the processor pads to the batch's most) and their counts, by the stock rule."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    config = model.config
    counts = [
        image_size_to_num_patches(s, config.image_grid_pinpoints, config.vision_config.image_size)
        for s in inputs["image_sizes"]
    ]
    return torch.cat([p[:n] for p, n in zip(inputs["pixel_values"], counts, strict=True)]), counts


def stock_layouts(model, inputs, counts: list[int]) -> list[torch.Tensor]:
    """The stock packing on features holding their own index: each packed row's source (view * 36 + patch)."""
    dummies = [torch.arange(n * VIEW_PATCHES, dtype=torch.float32).view(n, VIEW_PATCHES, 1) for n in counts]
    packed, _ = model.model.pack_image_features(dummies, inputs["image_sizes"], image_newline=torch.tensor([-1.0]))
    return [p[:, 0].long() for p in packed]


def expected_kept(model, inputs, ratio: float) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Per image, per view: the top k of the eager received attention (mean over heads and queries) among the
    patches the layout carries; and each image's layout."""
    views, counts = views_of(model, inputs)
    tower = model.model.vision_tower
    tower.set_attn_implementation("eager")
    with torch.no_grad():
        maps = tower(views, output_attentions=True).attentions[-1]
    tower.set_attn_implementation("sdpa")
    scores = maps.mean(dim=(1, 2)).split(counts)
    layouts = stock_layouts(model, inputs, counts)
    kept = []
    for s, layout in zip(scores, layouts, strict=True):
        carried = torch.zeros(s.numel(), dtype=torch.bool)
        carried[layout[layout >= 0]] = True
        ranked = s.masked_fill(~carried.view_as(s), float("-inf"))
        kept.append(list(ranked.topk(kept_count(VIEW_PATCHES, ratio), dim=-1).indices.sort(dim=-1).values))
    return kept, layouts


def shortened(model, inputs, kept, layouts) -> dict:
    """Kept packed rows (kept patches and every newline) of the stock features, prompts shortened to match."""
    with torch.no_grad():
        packed = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_sizes"], batch_num_images=inputs["batch_num_images"]
        ).pooler_output
    token = model.config.image_token_id
    rows_kept, ids_rows = [], []
    for b, (layout, views) in enumerate(zip(layouts, kept, strict=True)):
        chosen = {int(v) * VIEW_PATCHES + int(p) for v, patches in enumerate(views) for p in patches}
        rows = [i for i, source in enumerate(layout.tolist()) if source < 0 or source in chosen]
        rows_kept.append(packed[b][rows])
        ids = inputs["input_ids"][b][inputs["attention_mask"][b].bool()].tolist()
        first = ids.index(token)
        ids_rows.append(ids[:first] + [token] * len(rows) + ids[first + len(layout) :])
    width = max(len(r) for r in ids_rows)
    pad = model.config.text_config.pad_token_id
    return {
        "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in ids_rows]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids_rows]),
        "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=rows_kept)},
    }


def generate(model, inputs):
    return model.generate(
        **inputs, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )


def test_kept_sets_and_generate_match_the_stock_model(batch):
    stock, model = tiny_llava_onevision(text_layers=LAYERS), tiny_llava_onevision(text_layers=LAYERS)
    kept, layouts = expected_kept(stock, batch, 0.5)
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, batch)
        reference = generate(stock, shortened(stock, batch, kept, layouts))
    report = fastervlm.last_report(model)
    assert report.score == "received" and config_of(model).score == "received"
    assert [[v.tolist() for v in views] for views in report.kept_indices] == [
        [v.tolist() for v in views] for views in kept
    ]
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for got, want in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_ratio_zero_is_stock_and_unprune_restores_it(batch):
    model = tiny_llava_onevision(text_layers=LAYERS)
    with torch.no_grad():
        expected, logits = model.generate(**batch, max_new_tokens=STEPS, do_sample=False), model(**batch).logits
        fastervlm.prune(model, "fastervlm", ratio=0.0)
        assert torch.equal(model.generate(**batch, max_new_tokens=STEPS, do_sample=False), expected)
        fastervlm.unprune(model)
        fastervlm.prune(model, "random", tokens=4)
        model(**batch)
        fastervlm.unprune(model)
        assert torch.equal(model(**batch).logits, logits) and not hasattr(model, "_fastervlm")


@pytest.mark.parametrize(("method", "options"), [("fastervlm", {"ratio": 0.75}), ("fastv", {"ratio": 0.5})])
def test_batched_equals_one_by_one(method, options, processor, batch):
    model = fastervlm.prune(tiny_llava_onevision(text_layers=LAYERS), method, **options)
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        kept = fastervlm.last_report(model).kept_indices
        for b, (image, prompt) in enumerate(zip(synthetic_images(2), PROMPTS, strict=True)):
            alone = model.generate(
                **processor(images=[image], text=[prompt], return_tensors="pt"), max_new_tokens=STEPS, do_sample=False
            )
            assert torch.equal(alone[0, -STEPS:], together[b, -STEPS:])
            assert [v.tolist() for v in fastervlm.last_report(model).kept_indices[0]] == [v.tolist() for v in kept[b]]


def test_refusals(batch):
    model = tiny_llava_onevision(text_layers=LAYERS)
    with pytest.raises(ValueError, match=r"score='cls' needs a vision \[CLS\] token"):
        fastervlm.prune(model, "fastervlm", score="cls")
    with pytest.raises(ValueError, match="makes new tokens"):
        fastervlm.prune(model, "pool", ratio=0.5)
    with pytest.raises(ValueError, match=r"CLIP text tower matching the vision tower, and .* is SiglipVisionModel"):
        fastervlm.prune(model, "cdpruner", ratio=0.5)
    with pytest.raises(ValueError, match=r"needs a vision \[CLS\] token.*with a method that offers it"):
        fastervlm.prune(model, "vispruner", ratio=0.5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['mode'\].*own options: newline"):
        fastervlm.prune(model, "fastervlm", mode="paper")


def test_videos_keep_each_frames_top_k_of_its_pooled_tokens(processor):
    """Two 4-frame videos: each frame keeps the top k of its 3 x 3 pooled tokens, scored by the received
    attention pooled by the stock apply_pooling itself; the newline ending a video stays; generate equals the
    stock model fed the kept rows of its own video features."""
    videos = [synthetic_video(frames=4), synthetic_video(frames=4, seed=1)]
    prompts = ["USER: <video>\nWhat happens? ASSISTANT:", "USER: <video>\nWhy? ASSISTANT:"]
    inputs = processor(videos=videos, text=prompts, padding=True, return_tensors="pt")
    stock, model = tiny_llava_onevision(text_layers=LAYERS), tiny_llava_onevision(text_layers=LAYERS)
    frames = inputs["pixel_values_videos"].flatten(0, 1)
    tower = stock.model.vision_tower
    tower.set_attn_implementation("eager")
    with torch.no_grad():
        received = tower(frames, output_attentions=True).attentions[-1].mean(dim=(1, 2))
    tower.set_attn_implementation("sdpa")
    pooled = stock.model.apply_pooling(received.unsqueeze(-1))[..., 0]  # (frames, 9)
    k = kept_count(pooled.shape[1], 0.5)
    expected = pooled.topk(k, dim=-1).indices.sort(dim=-1).values.view(2, 4, k)
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with torch.no_grad():
        pruned = generate(model, inputs)
        output = stock.model.get_video_features(inputs["pixel_values_videos"])
    report = fastervlm.last_report(model)
    assert [[v.tolist() for v in views] for views in report.kept_indices] == expected.tolist()
    n, features = pooled.shape[1], output.pooler_output
    kept_rows = [torch.cat([(e + torch.arange(4).unsqueeze(1) * n).flatten(), torch.tensor([4 * n])]) for e in expected]
    token = stock.config.video_token_id
    short_ids = []
    for b, keep in enumerate(kept_rows):
        ids = inputs["input_ids"][b][inputs["attention_mask"][b].bool()].tolist()
        first = ids.index(token)
        short_ids.append(ids[:first] + [token] * len(keep) + ids[first + features.shape[1] :])
    width, pad = max(map(len, short_ids)), stock.config.text_config.pad_token_id
    output.pooler_output = torch.stack([f[r] for f, r in zip(features, kept_rows, strict=True)])
    short = {
        "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in short_ids]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in short_ids]),
        "mm_encoder_outputs": {"video": output},
    }
    with torch.no_grad():
        reference = generate(stock, short)
    assert torch.equal(pruned.sequences[:, -STEPS:], reference.sequences[:, -STEPS:])
    for got, want in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_an_image_beyond_anyres_max_9_is_refused(processor):
    """With 4 x 4 crop grids allowed, a large square image gets 16 crops, more than 9 views' worth of patches: the
    stock code blends the grid by interpolation, which no kept set can place, so pruning refuses it by name."""
    model = tiny_llava_onevision(text_layers=LAYERS)
    pinpoints = [[84 * rows, 84 * cols] for rows in range(1, 5) for cols in range(1, 5)]
    model.config.image_grid_pinpoints = pinpoints
    big = copy.deepcopy(processor)
    big.image_processor.image_grid_pinpoints = pinpoints
    inputs = big(images=[synthetic_images(2)[1].resize((336, 336))], text=PROMPTS[:1], return_tensors="pt")
    fastervlm.prune(model, "fastervlm", ratio=0.5)
    with pytest.raises(ValueError, match="exceeds vision_aspect_ratio='anyres_max_9'"), torch.no_grad():
        model(**inputs)
