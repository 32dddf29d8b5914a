"""Independent references the tests compare against: eager attention maps and hand-built short sequences.

Nothing here imports fastervlm's runtime: the reference reads attentions from an eager run of the stock
vision tower, feeds the stock model a sequence built by hand from the kept patches, or runs the stock decoder
layers one by one with hand-made masks.
"""

from __future__ import annotations

import torch
from transformers import LlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fastervlm.budget import kept_count


def tower_cls_scores(tower: torch.nn.Module, pixel_values: torch.Tensor, feature_layer: int) -> torch.Tensor:
    """[CLS] -> patch attention at the feature layer, heads averaged, one row per view, from materialised eager
    maps (images, heads, 1 + N, 1 + N)."""
    previous = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tower(pixel_values, output_attentions=True)
    finally:
        tower.set_attn_implementation(previous)
    return out.attentions[feature_layer][:, :, 0, 1:].mean(dim=1)


def eager_cls_scores(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    return tower_cls_scores(model.model.vision_tower, pixel_values, model.config.vision_feature_layer)


def reference_kept(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, ratio: float) -> torch.Tensor:
    scores = eager_cls_scores(model, pixel_values)
    k = kept_count(scores.shape[1], ratio)
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def short_inputs(
    model: LlavaForConditionalGeneration, inputs: dict, kept: torch.Tensor, pad_id: int
) -> dict[str, torch.Tensor]:
    """The batch a user would build by hand: only kept image tokens, re-left-padded, features pre-encoded."""
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"], return_dict=True)
    per_image = [f[k] for f, k in zip(features.pooler_output, kept, strict=True)]
    return inputs_with_features(model, inputs, per_image, pad_id)


def inputs_with_features(
    model: LlavaForConditionalGeneration, inputs: dict, per_image: list[torch.Tensor], pad_id: int
) -> dict[str, torch.Tensor]:
    """Each image's 576 placeholders replaced by as many as it has feature rows; left-padded again."""
    token = model.config.image_token_id
    rows, image = [], 0
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        ids = ids[mask.bool()].tolist()
        short, n_placeholder = [], 0
        for t in ids:
            if t != token:
                short.append(t)
                continue
            if n_placeholder % 576 == 0:
                short.extend([token] * len(per_image[image]))
                image += 1
            n_placeholder += 1
        rows.append(short)
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    image_out = BaseModelOutputWithPooling(pooler_output=per_image)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "mm_encoder_outputs": {"image": image_out}}


def feature_layer_states(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> tuple:
    """Hidden states entering and leaving the feature layer, and that layer's eager attention map."""
    tower = model.model.vision_tower
    previous = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = tower(pixel_values, output_attentions=True, output_hidden_states=True)
    finally:
        tower.set_attn_implementation(previous)
    layer = model.config.vision_feature_layer
    return out.hidden_states[layer - 1], out.hidden_states[layer], out.attentions[layer]


def real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions the way generate() derives them from a left-padded mask."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def merged_embeddings(model, inputs) -> torch.Tensor:
    """What the stock model feeds its language model: text embeddings with image features scattered in."""
    captured = {}
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, a, k: captured.update(embeds=k["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return captured["embeds"]


def run_layers(lm, hidden, positions, real, layers, keep_weights_of=None):
    """Stock decoder layers with a hand-built causal + padding mask; optionally capture one layer's attention."""
    length = hidden.shape[1]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool)) & real[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=hidden.dtype).masked_fill(~allowed, torch.finfo(hidden.dtype).min)
    mask = mask[:, None]
    rope = lm.rotary_emb(hidden, position_ids=positions)
    weights = {}
    for index in layers:
        layer = lm.layers[index]
        if index == keep_weights_of:
            handle = layer.self_attn.register_forward_hook(lambda m, a, out: weights.update(w=out[1]))
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope)
        if index == keep_weights_of:
            handle.remove()
    return hidden, weights.get("w")
