"""Full-size Qwen2.5-VL-3B / 7B, Qwen3-VL-8B and LLaVA-OneVision-7B for `fastervlm bench`, written as data.

Sizes are those of the checkpoints' config.json (Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct,
Qwen/Qwen3-VL-8B-Instruct, llava-hf/llava-onevision-qwen2-7b-ov-hf); token ids are the tiny tokenizers', which the
benchmark prompts use. Each arch has a fixed benchmark image, so its visual tokens are the real model's for that
image: Qwen2.5-VL at 672 x 672 px (48 x 48 patches of 14 px, 576 tokens after the 2 x 2 merger), Qwen3-VL at
768 x 768 (48 x 48 patches of 16 px, 576 tokens), OneVision at 768 x 768 (base view + 2 x 2 crops of 384 px:
729 + 54 x 54 unpadded + 54 newlines = 3,699 tokens). Same protocol as fastervlm.bench.archs.Arch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PretrainedConfig,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.initialization import no_init_weights
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from fastervlm.tiny import synthetic_images
from fastervlm.tiny.llava import seeded_model
from fastervlm.tiny.llava_onevision import OfflineLlavaOnevisionProcessor
from fastervlm.tiny.qwen2_vl import (
    IMAGE_PROMPT,
    OfflineQwen2VLProcessor,
    OfflineQwen3VLProcessor,
    _ids,
    tiny_qwen_tokenizer,
)
from fastervlm.tiny.video_llava import tiny_video_llava_tokenizer

TEXT_TOKENS = 64  # prompt characters around the image (one token each with the tiny tokenizers)
TWIN_VISION = {"hidden_size": 32, "intermediate_size": 64}
TWIN_VISION_HEADS = 2
TWIN_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
TWIN_MROPE = [2, 3, 3]  # head_dim 16: 8 rotary frequencies split (t, h, w)

QWEN25_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
QWEN25_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
QWEN25_3B = {
    **QWEN25_7B,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
}
QWEN3_VISION = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
}
QWEN3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
}
SIGLIP_SO400M = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "vision_use_head": False,
}
QWEN2_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152128,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
}
ONEVISION_PINPOINTS = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]


def scaled_widths(sizes: dict[str, Any], scale: float, heads_key: str) -> dict[str, Any]:
    """hidden x scale in whole heads of the real head size, intermediate in proportion; kv heads kept if they
    still divide the heads (else one per head)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1] (every width multiplied by it), got {scale!r}")
    if scale == 1.0:
        return dict(sizes)
    head = sizes.get("head_dim") or sizes["hidden_size"] // sizes[heads_key]
    hidden = max(head, round(sizes["hidden_size"] * scale / head) * head)
    out = {**sizes, "hidden_size": hidden, heads_key: hidden // head}
    out["intermediate_size"] = sizes["intermediate_size"] * hidden // sizes["hidden_size"]
    if "num_key_value_heads" in sizes and out[heads_key] % sizes["num_key_value_heads"]:
        out["num_key_value_heads"] = out[heads_key]
    return out


def twin_text(sizes: dict[str, Any]) -> dict[str, Any]:
    rope = {**sizes["rope_parameters"]}
    if "mrope_section" in rope:
        rope["mrope_section"] = TWIN_MROPE
    return {**sizes, **TWIN_TEXT, "head_dim": 16, "rope_parameters": rope}


def square_image(side: int) -> Image.Image:
    """The benchmark image: a synthetic square picture at `side` px."""
    return synthetic_images(2)[1].resize((side, side), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class FamilyArch:
    """One full-size model of a newer family (fastervlm.bench.archs.Arch's protocol)."""

    name: str
    model_class: type[nn.Module]
    make_config: Callable[[dict[str, Any], dict[str, Any]], PretrainedConfig]  # (vision, text sizes) -> config
    vision: dict[str, Any]
    text: dict[str, Any]
    views: int  # vision views per sample: 1 Qwen image (its own size), 5 OneVision views
    image_side: int  # the benchmark image's side, px
    merged_per_view: int  # visual tokens per view before pruning (Qwen: after the merger)
    processor: Callable[[], ProcessorMixin]
    prompt: Callable[[], str]
    tower: str = "visual"
    options: dict[str, str] = field(default_factory=dict)
    score: str = "received"  # no [CLS] token in these towers

    @property
    def patches_per_view(self) -> int:
        return self.merged_per_view

    @property
    def vision_heads(self) -> str:
        """The vision config's head-count key: Qwen's `num_heads`, SigLIP's `num_attention_heads`."""
        return "num_heads" if "num_heads" in self.vision else "num_attention_heads"

    def model(self, scale: float = 1.0, seed: int = 0) -> nn.Module:
        """Random weights, widths x scale, depth kept."""
        vision = scaled_widths(self.vision, scale, self.vision_heads)
        text = scaled_widths(self.text, scale, "num_attention_heads")
        config = self.make_config(vision, text)
        if detect_fake_mode() is None:
            return seeded_model(self.model_class, config, seed, "sdpa")
        # Built for FLOP counting: SigLIP's truncated-normal init reads values, which fake tensors do not have.
        with no_init_weights():
            return seeded_model(self.model_class, config, seed, "sdpa")

    def twin(self) -> nn.Module:
        """Full depth, tiny width: what a method keeps at each layer, fast on any CPU."""
        vision = {**self.vision, **TWIN_VISION, self.vision_heads: TWIN_VISION_HEADS}
        return seeded_model(self.model_class, self.make_config(vision, twin_text(self.text)), 0, "sdpa")

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        image = square_image(self.image_side)
        return dict(self.processor()(images=[image] * batch, text=[self.prompt()] * batch, return_tensors="pt"))

    def tower_inputs(self) -> tuple[Any, ...]:
        """The vision tower's call for one sample: flattened patches (fake) and their grid, or the views (fake).

        The grid stays a real tensor: the tower reads its values to lay out windows, segments and positions.
        """
        with FakeTensorMode(allow_non_fake_inputs=True):
            if self.model_class is LlavaOnevisionForConditionalGeneration:
                side = self.vision["image_size"]
                return (torch.empty(self.views, 3, side, side),)
            patch, temporal = self.vision["patch_size"], self.vision["temporal_patch_size"]
            side = self.image_side // patch
            patches = torch.empty(side * side, 3 * temporal * patch * patch)
        return patches, torch.tensor([[1, side, side]])

    def projector_of(self, base: nn.Module) -> nn.Module | None:
        """The projector run apart from the tower; None where the merger is the tower's last module (Qwen)."""
        return getattr(base, "multi_modal_projector", None)

    def scaled_name(self, scale: float) -> str:
        return self.name if scale == 1.0 else f"{self.name}@{scale:g}"


def qwen_prompt() -> str:
    return IMAGE_PROMPT + "x" * TEXT_TOKENS


def qwen25_config(vision: dict[str, Any], text: dict[str, Any]) -> PretrainedConfig:
    tok = tiny_qwen_tokenizer()
    text = {**text, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": None}
    vision = {"out_hidden_size": text["hidden_size"], **vision}
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, **_ids(tok))


def qwen3_config(vision: dict[str, Any], text: dict[str, Any]) -> PretrainedConfig:
    tok = tiny_qwen_tokenizer()
    text = {**text, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": None}
    vision = {"out_hidden_size": text["hidden_size"], **vision}
    return Qwen3VLConfig(vision_config=vision, text_config=text, **_ids(tok))


def onevision_config(vision: dict[str, Any], text: dict[str, Any]) -> PretrainedConfig:
    tok = tiny_video_llava_tokenizer()
    text = {**text, "model_type": "qwen2", "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    return LlavaOnevisionConfig(
        vision_config={**vision, "model_type": "siglip_vision_model"},
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        pad_token_id=tok.pad_token_id,
    )


def qwen_processor(patch: int, side: int, processor_class: type) -> Callable[[], ProcessorMixin]:
    """The image resized to exactly side x side: min and max pixels both side^2 (a square image)."""

    def build() -> ProcessorMixin:
        image_processor = Qwen2VLImageProcessorPil(
            size={"shortest_edge": side * side, "longest_edge": side * side},
            image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD,
            patch_size=patch,
            merge_size=2,
        )
        return processor_class(image_processor=image_processor, tokenizer=tiny_qwen_tokenizer(), video_processor=None)

    return build


def onevision_processor() -> ProcessorMixin:
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384})
    return OfflineLlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tiny_video_llava_tokenizer(),
        video_processor=None,
        num_image_tokens=729,
        vision_feature_select_strategy="full",
    )


def onevision_prompt() -> str:
    return "<image>\n" + "x" * TEXT_TOKENS


FAMILY_ARCHS: dict[str, FamilyArch] = {
    "qwen2.5-vl-3b": FamilyArch(
        "qwen2.5-vl-3b",
        Qwen2_5_VLForConditionalGeneration,
        qwen25_config,
        QWEN25_VISION,
        QWEN25_3B,
        1,
        672,
        576,
        qwen_processor(14, 672, OfflineQwen2VLProcessor),
        qwen_prompt,
    ),
    "qwen2.5-vl-7b": FamilyArch(
        "qwen2.5-vl-7b",
        Qwen2_5_VLForConditionalGeneration,
        qwen25_config,
        QWEN25_VISION,
        QWEN25_7B,
        1,
        672,
        576,
        qwen_processor(14, 672, OfflineQwen2VLProcessor),
        qwen_prompt,
    ),
    "qwen3-vl-8b": FamilyArch(
        "qwen3-vl-8b",
        Qwen3VLForConditionalGeneration,
        qwen3_config,
        QWEN3_VISION,
        QWEN3_8B,
        1,
        768,
        576,
        qwen_processor(16, 768, OfflineQwen3VLProcessor),
        qwen_prompt,
    ),
    "onevision-7b": FamilyArch(
        "onevision-7b",
        LlavaOnevisionForConditionalGeneration,
        onevision_config,
        SIGLIP_SO400M,
        QWEN2_7B,
        5,
        768,
        729,
        onevision_processor,
        onevision_prompt,
        tower="vision_tower",
    ),
}
