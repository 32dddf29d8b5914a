"""Video-LLaVA: per-frame and per-image [CLS] budgets, stock and paper modes, mixed batches, against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BatchFeature

import fastervlm
from fastervlm.models import adapter_for
from fastervlm.tiny import synthetic_images
from fastervlm.tiny.video_llava import (
    NUM_FRAMES,
    VIDEO_SEQ_LENGTH,
    synthetic_video,
    tiny_video_llava,
    tiny_video_llava_config,
    tiny_video_llava_processor,
)
from tests.reference import real_positions
from tests.reference_video_llava import reference_kept, reference_rows, short_inputs
from tests.test_api import hook_ids

IMAGE_PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
VIDEO_PROMPT = "USER: <video>\nWhy is this video funny? ASSISTANT:"
GREEDY = {"max_new_tokens": 6, "do_sample": False}
CONFIG = tiny_video_llava_config()
IMAGE, VIDEO = CONFIG.image_token_id, CONFIG.video_token_id


@pytest.fixture(scope="module")
def processor():
    return tiny_video_llava_processor()


@pytest.fixture(scope="module")
def mixed(processor) -> BatchFeature:
    """An image sample and a video sample of very different lengths: the image sample is mostly left padding."""
    return processor(
        text=[IMAGE_PROMPT, VIDEO_PROMPT], images=synthetic_images(1), videos=[synthetic_video()], padding=True
    )


@pytest.fixture(scope="module")
def one_video(processor) -> BatchFeature:
    return processor(text=[VIDEO_PROMPT], videos=[synthetic_video(seed=3)])


def expected_views(kept: dict[str, torch.Tensor], inputs: BatchFeature) -> list[list[list[int]]]:
    """Report layout per sample: its image views, then its frames, in the batch's order."""
    counts = {
        "image": (inputs["input_ids"] == IMAGE).sum(dim=1) // 256,
        "video": (inputs["input_ids"] == VIDEO).sum(dim=1) // (VIDEO_SEQ_LENGTH // NUM_FRAMES),
    }
    views, used = [[] for _ in inputs["input_ids"]], dict.fromkeys(kept, 0)
    for modality in ("image", "video"):
        for sample, n in enumerate(counts[modality].tolist()):
            views[sample] += kept[modality][used[modality] : used[modality] + n].tolist()
            used[modality] += n
    return views


def report_views(model) -> list[list[list[int]]]:
    return [[v.tolist() for v in sample] for sample in fastervlm.last_report(model).kept_indices]


def new_tokens(out: torch.Tensor, inputs: dict) -> torch.Tensor:
    return out[:, inputs["input_ids"].shape[1] :]


def test_processor_gives_257_placeholders_per_frame_and_256_per_image(processor, mixed):
    assert mixed["pixel_values"].shape == (1, 3, 224, 224)
    assert mixed["pixel_values_videos"].shape == (1, NUM_FRAMES, 3, 224, 224)
    assert (mixed["input_ids"] == IMAGE).sum(dim=1).tolist() == [256, 0]
    assert (mixed["input_ids"] == VIDEO).sum(dim=1).tolist() == [0, 8 * 257]
    frames = synthetic_video()
    as_array = processor(text=VIDEO_PROMPT, videos=np.stack([np.asarray(f) for f in frames]))
    assert torch.equal(as_array["pixel_values_videos"], mixed["pixel_values_videos"])


def test_adapter_scores_each_modality_with_its_own_tower():
    model = tiny_video_llava()
    adapter = adapter_for(model)
    for modality, tower in (("image", model.model.image_tower), ("video", model.model.video_tower)):
        attention = adapter.vision_attention(model, modality, None)
        layer = tower.encoder.layers[1].self_attn  # 3 layers, feature layer -2
        assert attention.q_proj is layer.q_proj and attention.k_proj is layer.k_proj
    assert adapter.patch_grid(model) == (16, 16) and adapter.projector(model) is model.model.multi_modal_projector
    assert [(m.name, m.token_id) for m in adapter.modalities(model)] == [("image", IMAGE), ("video", VIDEO)]
    kept = torch.tensor([[0, 5, 255]])
    assert adapter_for(model, mode="stock").feature_rows("video", kept, 257).tolist() == [[0, 1, 6, 256]]
    assert adapter_for(model, mode="paper").feature_rows("video", kept, 257).tolist() == [[1, 6, 256]]
    assert adapter_for(model, mode="paper").feature_rows("image", kept, 256).tolist() == [[0, 5, 255]]


def test_kept_per_view_is_top_k_of_eager_cls_rows(mixed):
    """Each frame by its own [CLS] row in the video tower, the image by the image tower's; 26 of 256 each."""
    stock, model = tiny_video_llava(), tiny_video_llava()
    kept = reference_kept(stock, mixed, 0.9)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        model(**mixed)
    views = report_views(model)
    assert [len(sample) for sample in views] == [1, NUM_FRAMES]
    assert {len(v) for sample in views for v in sample} == {26}
    assert views == expected_views(kept, mixed)
    assert len({tuple(v) for v in views[1]}) > 1, "frames differ, so their kept sets should too"


def test_ratio_zero_in_stock_mode_is_the_stock_model(mixed):
    model = tiny_video_llava()
    with torch.no_grad():
        logits = model(**mixed).logits
        tokens = model.generate(**mixed, **GREEDY)
    fastervlm.prune(model, method="fastervlm", ratio=0.0)
    with torch.no_grad():
        assert torch.equal(model(**mixed).logits, logits)
        assert torch.equal(model.generate(**mixed, **GREEDY), tokens)
    report = fastervlm.last_report(model)
    assert report.applied and report.visual_tokens_in == report.visual_tokens_out == 256 + 2056


@pytest.mark.parametrize(("mode", "ratio"), [("stock", 0.9), ("paper", 0.9), ("paper", 0.0), ("stock", 1.0)])
def test_generate_equals_hand_built_sequence(mixed, mode, ratio):
    """Greedy tokens and every step's logits equal the stock model's on the sequence shortened by hand."""
    stock, model = tiny_video_llava(), tiny_video_llava()
    kept = reference_kept(stock, mixed, ratio)
    short = short_inputs(stock, mixed, reference_rows(kept, mode), pad_id=stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=ratio, mode=mode)
    options = {**GREEDY, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = stock.generate(**short, **options)
        got = model.generate(**mixed, **options)
    assert report_views(model) == expected_views(kept, mixed)
    assert torch.equal(got.sequences[:, : mixed["input_ids"].shape[1]], mixed["input_ids"])
    assert torch.equal(new_tokens(got.sequences, mixed), new_tokens(expected.sequences, short))
    for step_got, step_expected in zip(got.logits, expected.logits, strict=True):
        torch.testing.assert_close(step_got, step_expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("mode", "per_frame"), [("stock", 27), ("paper", 26)])
@pytest.mark.parametrize("budget", [{"ratio": 0.9}, {"tokens": 26}])
def test_token_counts_8x256_to_8x26(one_video, mode, per_frame, budget):
    """The paper's 90 %: 26 patches per frame; stock mode adds each frame's [CLS] row (8 more tokens)."""
    model = fastervlm.prune(tiny_video_llava(), method="fastervlm", mode=mode, **budget)
    with torch.no_grad():
        model(**one_video)
    report = fastervlm.last_report(model)
    assert [[len(v) for v in sample] for sample in report.kept_indices] == [[26] * NUM_FRAMES]
    assert report.visual_tokens_in == 2056 and report.visual_tokens_out == NUM_FRAMES * per_frame
    assert report.llm_input_lengths == [one_video["input_ids"].shape[1] - 2056 + NUM_FRAMES * per_frame]


def test_image_and_video_in_one_sample(processor):
    """The report lists a sample's image views first, then its frames; the logits match the hand-built batch."""
    inputs = processor(
        text=["USER: <video>\n<image>\nSame scene? ASSISTANT:", IMAGE_PROMPT],
        images=synthetic_images(2, seed=5),
        videos=[synthetic_video(seed=5)],
        padding=True,
    )
    stock, model = tiny_video_llava(), tiny_video_llava()
    kept = reference_kept(stock, inputs, 0.9)
    short = short_inputs(stock, inputs, reference_rows(kept, "stock"), pad_id=stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = stock(**short, position_ids=real_positions(short["attention_mask"])).logits
        got = model(**inputs, position_ids=real_positions(inputs["attention_mask"])).logits
    assert report_views(model) == expected_views(kept, inputs)
    mask = fastervlm.api.installation(model)._plan.mask
    for g, e, m, n in zip(got, expected, mask, short["attention_mask"], strict=True):
        torch.testing.assert_close(g[m.bool()], e[n.bool()], atol=1e-5, rtol=1e-4)


def test_batched_equals_one_by_one(mixed):
    model = fastervlm.prune(tiny_video_llava(), method="fastervlm", ratio=0.9)
    with torch.no_grad():
        batched = model.generate(**mixed, **GREEDY)
        batched_views = report_views(model)
        for i, pixels in enumerate(("pixel_values", "pixel_values_videos")):  # sample 0 the image, 1 the video
            real = mixed["attention_mask"][i].bool()
            alone = {key: mixed[key][i : i + 1, real] for key in ("input_ids", "attention_mask")}
            out = model.generate(**alone, **{pixels: mixed[pixels]}, **GREEDY)
            assert report_views(model) == [batched_views[i]]
            assert torch.equal(new_tokens(out, alone)[0], new_tokens(batched, mixed)[i])


def test_unprune_restores_stock(one_video):
    model = tiny_video_llava()
    with torch.no_grad():
        expected = model(**one_video).logits
    hooks = hook_ids(model)
    fastervlm.unprune(fastervlm.prune(model, method="fastervlm", ratio=0.9, mode="paper"))
    with torch.no_grad():
        assert torch.equal(model(**one_video).logits, expected)
    for module in (model, model.model):
        assert not {"forward", "get_image_features", "get_video_features"} & set(vars(module))
    assert hook_ids(model) == hooks


@pytest.mark.parametrize(
    "options",
    [{"num_beams": 3, "do_sample": False}, {"num_beams": 2, "num_return_sequences": 2, "do_sample": False}],
)
def test_beam_search_equals_hand_built_sequence(mixed, options):
    """generate() re-stacks tensor features to expand them; the selection must follow, sample by sample."""
    stock, model = tiny_video_llava(), tiny_video_llava()
    kept = reference_kept(stock, mixed, 0.9)
    short = short_inputs(stock, mixed, reference_rows(kept, "stock"), pad_id=stock.config.pad_token_id)
    fastervlm.prune(model, method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = stock.generate(**short, max_new_tokens=4, **options)
        got = model.generate(**mixed, max_new_tokens=4, **options)
    assert torch.equal(new_tokens(got, mixed), new_tokens(expected, short))


def test_legacy_pixel_values_images_key(processor):
    """VideoLlavaImageProcessor still returns `pixel_values_images`; the top model and the base model take it."""
    inputs = processor(text=[IMAGE_PROMPT], images=synthetic_images(1))
    legacy = {**inputs, "pixel_values_images": inputs["pixel_values"]}
    del legacy["pixel_values"]
    model = fastervlm.prune(tiny_video_llava(), method="fastervlm", ratio=0.9)
    with torch.no_grad():
        expected = model(**inputs).logits
        assert torch.equal(model(**legacy).logits, expected)
        model.model(**legacy)
    assert fastervlm.last_report(model).visual_tokens_out == 26


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "original"}, "mode must be one of 'stock', 'paper' for VideoLlavaForConditionalGeneration"),
        ({"tokens": 257}, r"tokens must be in \[0, 256\]"),
        ({"score_layer": 0}, "score_layer must select an encoder layer"),
    ],
)
def test_bad_arguments_name_the_argument(options, match):
    model = tiny_video_llava()
    with pytest.raises(ValueError, match=match):
        fastervlm.prune(model, method="fastervlm", **options)
    assert not hasattr(model, "_fastervlm")


def test_full_feature_strategy_is_refused():
    model = tiny_video_llava()
    model.config.vision_feature_select_strategy = "full"
    with pytest.raises(ValueError, match="vision_feature_select_strategy must be 'default'"):
        fastervlm.prune(model, ratio=0.5)


def test_video_tower_without_cls_is_refused():
    model = tiny_video_llava()
    model.model.video_tower.__class__ = type("SiglipVisionModel", (type(model.model.video_tower),), {})
    with pytest.raises(ValueError, match=r"video_tower \(SiglipVisionModel\) has no \[CLS\] token"):
        fastervlm.prune(model, ratio=0.5)
