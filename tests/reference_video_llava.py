"""Independent Video-LLaVA references: eager [CLS] maps per image and per frame, hand-built short sequences.

Like tests/reference.py, nothing here imports fastervlm's runtime or adapters: the kept patches come from eager
attention maps of the stock towers, and the expected outputs from the stock model fed a sequence built by hand.
"""

from __future__ import annotations

import torch
from transformers import VideoLlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fastervlm.budget import kept_count
from tests.reference import tower_cls_scores

PIXELS = {"image": "pixel_values", "video": "pixel_values_videos"}


def reference_kept(model: VideoLlavaForConditionalGeneration, inputs: dict, ratio: float) -> dict[str, torch.Tensor]:
    """Per modality, (views, k) kept patch indices: images by the image tower, each frame by the video tower."""
    layer = model.config.vision_feature_layer
    kept = {}
    for modality, key in PIXELS.items():
        if inputs.get(key) is None:
            continue
        pixels = inputs[key].flatten(0, 1) if modality == "video" else inputs[key]  # videos: (B * frames, C, H, W)
        tower = model.model.video_tower if modality == "video" else model.model.image_tower
        scores = tower_cls_scores(tower, pixels, layer)
        k = kept_count(scores.shape[1], ratio)
        kept[modality] = scores.topk(k, dim=-1).indices.sort(dim=-1).values
    return kept


def reference_rows(kept: dict[str, torch.Tensor], mode: str) -> dict[str, torch.Tensor]:
    """Feature rows that reach the LLM: an image's rows are its patches; a frame's rows are [CLS, patches...],
    and the HF model feeds the [CLS] row (stock) where the original Video-LLaVA dropped it (paper)."""
    rows = dict(kept)
    if "video" in kept:
        patches = kept["video"] + 1
        cls = torch.zeros(patches.shape[0], 1, dtype=patches.dtype)
        rows["video"] = patches if mode == "paper" else torch.cat([cls, patches], dim=1)
    return rows


def stock_features(model: VideoLlavaForConditionalGeneration, inputs: dict) -> dict[str, torch.Tensor]:
    """Unpruned projected features per modality, (views, rows, dim), from the stock encoders."""
    features = {}
    with torch.no_grad():
        if inputs.get("pixel_values") is not None:
            image = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True)
            features["image"] = image.pooler_output
        if inputs.get("pixel_values_videos") is not None:
            video = model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"], return_dict=True)
            features["video"] = video.pooler_output
    return features


def short_inputs(
    model: VideoLlavaForConditionalGeneration, inputs: dict, rows: dict[str, torch.Tensor], pad_id: int
) -> dict:
    """The batch a user would build by hand: each view's placeholders cut to its kept rows, re-left-padded,
    features pre-encoded and cut to the same rows."""
    features = stock_features(model, inputs)
    token_of = {"image": model.config.image_token_id, "video": model.config.video_token_id}
    modality_of = {token: modality for modality, token in token_of.items()}
    seen = dict.fromkeys(features, 0)  # placeholders passed so far, per modality, over the whole batch
    sequences = []
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        short = []
        for token in ids[mask.bool()].tolist():
            modality = modality_of.get(token)
            if modality is None:
                short.append(token)
                continue
            if seen[modality] % features[modality].shape[1] == 0:  # the first placeholder of a view
                short.extend([token] * rows[modality].shape[1])
            seen[modality] += 1
        sequences.append(short)
    width = max(len(s) for s in sequences)
    input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences])
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    encoded = {
        modality: BaseModelOutputWithPooling(
            pooler_output=torch.stack([f[r] for f, r in zip(features[modality], rows[modality], strict=True)])
        )
        for modality in features
    }
    return {"input_ids": input_ids, "attention_mask": attention_mask, "mm_encoder_outputs": encoded}
