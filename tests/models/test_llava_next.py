"""LLaVA-NeXT: per-view budgets, stock and paper layouts, newline options, against independent references."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BatchFeature, LlavaNextProcessor

import fastervlm
from fastervlm.budget import kept_count
from fastervlm.models import adapter_for
from fastervlm.models.llava_next import paper_processor
from fastervlm.tiny import synthetic_images, tiny_llava_next, tiny_llava_next_processor
from fastervlm.tiny.llava_next import GRID_PINPOINTS
from tests.models.llava_next_reference import (
    NEWLINE,
    N,
    eager_view_scores,
    kept_rows,
    paper_layout,
    paper_packed,
    projected_views,
    reached,
    real_views,
    short_inputs,
    stock_layout,
    stock_packed,
    top_k,
    views_per_image,
)

PROMPTS = ["USER: <image>\nWhat is in the picture? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"]
PAPER_GRID = [[672, 672]]
GENERATE = {"max_new_tokens": 6, "do_sample": False}


@pytest.fixture(scope="module")
def processor() -> LlavaNextProcessor:
    return tiny_llava_next_processor()


@pytest.fixture(scope="module")
def images() -> list:
    """400 x 300 (a 1 x 2 grid: 3 views, unpadded columns) and 512 x 384 (2 x 2: 5 views, unpadded rows)."""
    found = synthetic_images(3)
    return [found[0], found[2]]


@pytest.fixture(scope="module")
def batch(processor, images) -> BatchFeature:
    return processor(images=images, text=PROMPTS, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def paper_batch(processor, images) -> BatchFeature:
    return paper_processor(processor)(images=images, text=PROMPTS, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def stock():
    """The unpruned model the references run on; tests prune fresh models of the same seed, never this one."""
    return tiny_llava_next()


@pytest.fixture(scope="module")
def reference(stock, batch, paper_batch) -> dict:
    """Eager [CLS] scores and packed features of both batches, computed once: the references' costly part."""
    return {
        "stock": (eager_view_scores(stock, batch, GRID_PINPOINTS), stock_packed(stock, batch)),
        "paper": (eager_view_scores(stock, paper_batch, PAPER_GRID), paper_packed(stock, paper_batch)),
    }


def new_tokens(out: torch.Tensor, inputs: dict) -> torch.Tensor:
    return out[:, inputs["input_ids"].shape[1] :]


def expected_stock(stock, reference, inputs, ratio: float, newline: str) -> tuple[dict, list[list[list[int]]]]:
    """Hand-built short batch for stock mode, and per image per view the patches that must reach the LLM."""
    scores, packed = reference["stock"]
    layouts = [stock_layout(s.tolist(), GRID_PINPOINTS) for s in inputs["image_sizes"]]
    kept = top_k(scores, ratio, layouts)
    rows = [kept_rows(layout, k, newline) for layout, k in zip(layouts, kept, strict=True)]
    short = short_inputs(stock, inputs, packed, rows)
    return short, [reached(layout, r, len(k)) for layout, r, k in zip(layouts, rows, kept, strict=True)]


def expected_paper(stock, reference, inputs, ratio: float) -> tuple[dict, list[list[list[int]]]]:
    """The paper layout has every patch of every view, so what reaches the LLM is exactly each view's top-k."""
    scores, packed = reference["paper"]
    kept = top_k(scores, ratio)
    rows = [kept_rows(paper_layout(), k, "none") for k in kept]
    return short_inputs(stock, inputs, packed, rows), [[v.tolist() for v in k] for k in kept]


def report_views(model) -> list[list[list[int]]]:
    return [[v.tolist() for v in views] for views in fastervlm.last_report(model).kept_indices]


def test_reference_layouts_match_stock_packing(stock, reference, batch):
    """The hand-derived stock layout reproduces the stock model's packed features row for row."""
    counts = views_per_image(batch["image_sizes"], GRID_PINPOINTS)
    assert counts == [3, 5]
    flat = projected_views(stock, real_views(batch["pixel_values"], counts)).split(counts)
    for packed, views, size in zip(reference["stock"][1], flat, batch["image_sizes"], strict=True):
        layout = torch.tensor(stock_layout(size.tolist(), GRID_PINPOINTS))
        expected = views.flatten(0, 1)[layout.clamp(min=0)]
        expected[layout == NEWLINE] = stock.model.image_newline
        torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-5)
    assert [len(stock_layout(s.tolist(), GRID_PINPOINTS)) for s in batch["image_sizes"]] == [1368, 2340]


def test_ratio_zero_reproduces_stock_exactly(stock, batch):
    model = fastervlm.prune(tiny_llava_next(), ratio=0.0)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, stock(**batch).logits)
        assert torch.equal(model.generate(**batch, **GENERATE), stock.generate(**batch, **GENERATE))
    report = fastervlm.last_report(model)
    assert report.visual_tokens_in == report.visual_tokens_out == 1368 + 2340


@pytest.mark.parametrize(("newline", "ratio"), [("all", 0.9), ("row", 0.9), ("row", 0.5), ("none", 0.5), ("all", 0.95)])
def test_stock_generate_equals_hand_built_sequence(stock, reference, batch, newline, ratio):
    """Kept patches per view are the eager top-k that survive unpadding; generate matches the stock model."""
    model = tiny_llava_next()
    short, views = expected_stock(stock, reference, batch, ratio, newline)
    fastervlm.prune(model, method="fastervlm", ratio=ratio, newline=newline)
    options = {**GENERATE, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**batch, **options)
    report = fastervlm.last_report(model)
    assert report_views(model) == views
    assert report.visual_tokens_out == int((short["input_ids"] == stock.config.image_token_id).sum())
    assert report.llm_input_lengths == short["attention_mask"].sum(dim=1).tolist()
    assert torch.equal(new_tokens(got.sequences, batch), new_tokens(expected.sequences, short))
    for step_got, step_expected in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(step_got, step_expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ratio", [0.9, 0.95])
def test_paper_generate_equals_hand_built_sequence(stock, reference, paper_batch, ratio):
    model = tiny_llava_next()
    short, views = expected_paper(stock, reference, paper_batch, ratio)
    fastervlm.prune(model, method="fastervlm", ratio=ratio, mode="paper")
    options = {**GENERATE, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**paper_batch, **options)
    assert report_views(model) == views
    assert torch.equal(new_tokens(got.sequences, paper_batch), new_tokens(expected.sequences, short))
    for step_got, step_expected in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(step_got, step_expected, atol=1e-4, rtol=1e-4)


def test_paper_ratio_zero_is_the_stock_model_on_spatial_features(stock, reference, paper_batch):
    """Nothing pruned: the stock LLM fed the 2 x 2880 spatially merged rows, logits and all."""
    short, _ = expected_paper(stock, reference, paper_batch, 0.0)
    assert torch.equal(short["input_ids"], paper_batch["input_ids"])
    model = fastervlm.prune(tiny_llava_next(), ratio=0.0, mode="paper")
    with torch.no_grad():
        torch.testing.assert_close(model(**paper_batch).logits, stock(**short).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("ratio", "per_view"), [(0.95, 29), (0.9, 58), (0.0, 576)])
def test_paper_token_counts(paper_batch, ratio, per_view):
    """The paper's budget: 2880 tokens per image, every view keeping the same k (95 % -> 29 x 5 = 145)."""
    model = fastervlm.prune(tiny_llava_next(), ratio=ratio, mode="paper")
    with torch.no_grad():
        model(**paper_batch)
    report = fastervlm.last_report(model)
    assert (paper_batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist() == [2880, 2880]
    assert [[len(v) for v in views] for views in report.kept_indices] == [[per_view] * 5] * 2
    assert report.kept_per_sample == [5 * per_view] * 2
    assert report.visual_tokens_in == 5760 and report.visual_tokens_out == 10 * per_view
    real = paper_batch["attention_mask"].sum(dim=1)
    assert report.llm_input_lengths == (real - 2880 + 5 * per_view).tolist()


@pytest.mark.parametrize(("ratio", "newline"), [(0.9, "all"), (0.9, "row"), (0.9, "none"), (0.0, "row"), (0.0, "none")])
def test_stock_newline_token_counts(processor, ratio, newline):
    """One 400 x 300 image: base 576 + a 24 x 32 grid (1 x 2 crops, 16 columns of padding cut) + 24 newlines = 1368.

    The crops sit side by side, so patch p of either crop lies in grid row p // 24, and "row" keeps one newline
    per grid row holding a kept crop patch.
    """
    inputs = processor(images=synthetic_images(1), text=PROMPTS[:1], return_tensors="pt")
    model = fastervlm.prune(tiny_llava_next(), ratio=ratio, newline=newline)
    with torch.no_grad():
        model(**inputs)
    report = fastervlm.last_report(model)
    base, *crops = report.kept_indices[0]
    rows = {int(p) // 24 for crop in crops for p in crop}
    newlines = {"all": 24, "row": len(rows), "none": 0}[newline]
    assert report.visual_tokens_in == 1368 and len(base) == kept_count(N, ratio)
    assert report.visual_tokens_out == report.kept_per_sample[0] + newlines
    carried = [24 * 16, 24 * 16]  # unpadding leaves 16 of each crop's 24 columns
    assert [len(c) for c in crops] == [min(kept_count(N, ratio), n) for n in carried]


@pytest.mark.parametrize("options", [{"newline": "row"}, {"mode": "paper"}])
def test_batched_equals_one_by_one(batch, paper_batch, options):
    """Images with 3 and 5 views in one batch; each sample alone gives the same kept sets and tokens."""
    inputs = paper_batch if options.get("mode") == "paper" else batch
    model = fastervlm.prune(tiny_llava_next(), ratio=0.9, **options)
    with torch.no_grad():
        batched = model.generate(**inputs, **GENERATE)
        batched_views = report_views(model)
        for i in range(2):
            real = inputs["attention_mask"][i].bool()
            views = inputs["image_sizes"].new_tensor(5 if options.get("mode") else [3, 5][i])
            one = {
                "input_ids": inputs["input_ids"][i : i + 1, real],
                "attention_mask": inputs["attention_mask"][i : i + 1, real],
                "pixel_values": inputs["pixel_values"][i : i + 1, :views],
                "image_sizes": inputs["image_sizes"][i : i + 1],
            }
            alone = model.generate(**one, **GENERATE)
            assert report_views(model)[0] == batched_views[i]
            assert torch.equal(new_tokens(alone, one)[0], new_tokens(batched, inputs)[i])


@pytest.mark.parametrize("mode", ["stock", "paper"])
def test_beam_search_matches_hand_built_sequence(stock, reference, batch, paper_batch, mode):
    """Beam expansion repeats the per-image features; their selections must follow them."""
    model = tiny_llava_next()
    if mode == "paper":
        inputs, (short, _) = paper_batch, expected_paper(stock, reference, paper_batch, 0.9)
    else:
        inputs, (short, _) = batch, expected_stock(stock, reference, batch, 0.9, "all")
    fastervlm.prune(model, ratio=0.9, mode=mode)
    options = {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**inputs, **options)
    assert torch.equal(new_tokens(got, inputs), new_tokens(expected, short))


def test_unprune_restores_stock(stock, batch, paper_batch):
    """Paper mode pins the grid and repacks; unprune puts config and methods back exactly."""
    model = tiny_llava_next()
    with torch.no_grad():
        expected = stock(**batch).logits
    pinpoints, keys = copy.deepcopy(model.config.image_grid_pinpoints), set(model.state_dict())
    fastervlm.prune(model, ratio=0.9, mode="paper")
    assert model.config.image_grid_pinpoints == PAPER_GRID
    with torch.no_grad():
        model(**paper_batch)
    fastervlm.unprune(model)
    assert model.config.image_grid_pinpoints == pinpoints
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)
    assert set(model.state_dict()) == keys and not hasattr(model, "_fastervlm")
    for name in ("forward", "get_image_features", "pack_image_features"):
        assert name not in vars(model.model)


def test_adapter_locates_modules():
    model = tiny_llava_next()
    adapter = adapter_for(model)
    attention = adapter.vision_attention(model, "image", None)
    assert attention.q_proj is model.model.vision_tower.encoder.layers[1].self_attn.q_proj
    assert adapter.projector(model) is model.model.multi_modal_projector
    assert adapter.patches_per_view(model) == N and (adapter.mode, adapter.newline) == ("stock", "all")


def test_paper_processor_counts_the_spatial_layout(processor, images):
    paper = paper_processor(processor)
    assert processor.image_processor.image_grid_pinpoints == GRID_PINPOINTS, "the stock processor is untouched"
    for p in (paper, copy.deepcopy(paper)):
        out = p(images=images, text=PROMPTS, padding=True, return_tensors="pt")
        assert out["pixel_values"].shape[1] == 5
        assert (out["input_ids"] == p.image_token_id).sum(dim=1).tolist() == [2880, 2880]
    with pytest.raises(TypeError, match="processor must be a LlavaNextProcessor, got LlavaProcessor"):
        from fastervlm.tiny import tiny_processor

        paper_processor(tiny_processor())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "spatial"}, "mode must be one of 'stock', 'paper' for LlavaNextForConditionalGeneration"),
        ({"newline": "some"}, "newline must be one of 'all', 'row', 'none'"),
        ({"mode": "paper", "newline": "row"}, "newline='row' applies to mode='stock' only"),
        ({"ratio": 1.5}, "ratio must be a number in \\[0, 1\\]"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    model = tiny_llava_next()
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(model, **options)
    assert not hasattr(model, "_fastervlm") and model.config.image_grid_pinpoints == GRID_PINPOINTS


def test_paper_mode_refuses_stock_inputs_and_says_what_to_do(batch, processor):
    model = fastervlm.prune(tiny_llava_next(), ratio=0.9, mode="paper")
    fix = r"Preprocess with fastervlm\.models\.llava_next\.paper_processor\(processor\)"
    with pytest.raises(ValueError, match=f"input_ids hold 3708 image tokens; .* give 5760 .*{fix}"):
        model.generate(**batch, **GENERATE)  # the batch's widest image has 5 views: the counts catch it
    one = processor(images=synthetic_images(1), text=PROMPTS[:1], return_tensors="pt")  # 3 views
    with pytest.raises(ValueError, match=f"pixel_values hold 3 views per image; mode='paper' needs 5 .*{fix}"):
        model(**one)


def test_stock_mode_refuses_paper_inputs(paper_batch):
    model = fastervlm.prune(tiny_llava_next(), ratio=0.9)
    with pytest.raises(
        ValueError, match=r"input_ids hold 5760 image tokens; .*need fastervlm\.prune\(model, .*mode='paper'"
    ):
        model(**paper_batch)
