"""Tiny, randomly initialised Qwen2-VL / Qwen2.5-VL / Qwen3-VL models and an offline processor, for demos and tests.

The real geometry where pruning depends on it (14 px patches, 2 x 2 merger, temporal patch 2, Qwen2.5-VL's
112 px windows scaled down so a tiny image spans several), with small pixel budgets so an image is a few dozen
merged tokens; nothing touches the Hugging Face hub.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BatchFeature,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Without torchvision, `Qwen2VLImageProcessor` only falls back to this class after a warning.
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata, make_batched_videos

from fastervlm.tiny.llava import seeded_model

SPECIAL_TOKENS = (
    "<unk>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PATCH_SIZE = 14
QWEN3_PATCH_SIZE = 16
MERGE = 2
# Pixel budget of the image processor: 4..20 merged tokens' worth of 28 x 28 pixels (the real range is 4..16384).
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 20 * 28 * 28
IMAGE_PROMPT = "<|vision_start|><|image_pad|><|vision_end|>"  # what Qwen's chat template writes per image
VIDEO_PROMPT = "<|vision_start|><|video_pad|><|vision_end|>"  # per video (Qwen3-VL's processor adds timestamps)
FPS = 2.0  # the synthetic videos' frame rate, for Qwen3-VL's timestamps


def tiny_qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges (one token per byte) and Qwen's vision special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        padding_side="left",  # batched generation needs prompts right-aligned
    )


def offline_video_processor_class(argument: Any) -> type:
    """The class check transformers 5.23 cannot do without torchvision, done directly (None: no videos)."""
    if argument is None:
        return type(None)
    if not isinstance(argument, VideoProcessorMixin):
        raise TypeError(f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}")
    return VideoProcessorMixin


class OfflineQwen2VLProcessor(Qwen2VLProcessor):
    """The stock Qwen2VLProcessor for images, constructible without torchvision.

    transformers 5.23 looks the video processor up in a registry it replaces with a dummy when torchvision is
    missing (AttributeError: '_extra_content'); images only need that check skipped. The text expansion
    (one <|image_pad|> per merged token), mm_token_type_ids and batching are the stock code. Videos come from
    FrameGroupVideoProcessor, checked here as a VideoProcessorMixin directly.
    """

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name == "video_processor":
            return offline_video_processor_class(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


class FrameGroupVideoProcessor(VideoProcessorMixin):
    """Qwen2-VL's video preprocessing without torchvision (which transformers 5.23's Qwen2VLVideoProcessor needs).

    The stock steps on PIL frames: every frame resized to the smart_resize of the first (multiples of 28 px within
    the pixel budget), rescaled and normalised, the last frame repeated to an even count, then patchified as
    Qwen2VLVideoProcessor.patchify does: consecutive frame pairs form one temporal patch, a frame group, and each
    group's patches are ordered merge group by merge group. Returns pixel_values_videos (patches, 3 x 2 x p x p),
    video_grid_thw (videos, 3) and, for Qwen3-VL's timestamps, video_metadata (frames taken at FPS).
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]  # noqa: RUF012 - transformers reads it
    merge_size = MERGE
    temporal_patch_size = 2

    def __init__(self, image_processor: Qwen2VLImageProcessorPil, patch_size: int = PATCH_SIZE) -> None:
        self.image_processor, self.patch_size = image_processor, patch_size

    def preprocess(self, videos: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        patch, merge, temporal = self.patch_size, self.merge_size, self.temporal_patch_size
        size = self.image_processor.size
        mean = torch.tensor(self.image_processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std).view(1, 3, 1, 1)
        pixels, grids, metadata = [], [], []
        for frames in make_batched_videos(videos):
            frames = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in frames]
            height, width = smart_resize(
                frames[0].height, frames[0].width, patch * merge, size["shortest_edge"], size["longest_edge"]
            )
            resized = [np.asarray(f.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)) for f in frames]
            video = (torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255 - mean) / std
            if pad := -len(video) % temporal:
                video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
            t, h, w = len(video) // temporal, height // patch, width // patch
            groups = video.view(t, temporal, 3, h // merge, merge, patch, w // merge, merge, patch)
            pixels.append(groups.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * h * w, -1))
            grids.append([t, h, w])
            metadata.append(
                VideoMetadata(total_num_frames=len(frames), fps=FPS, frames_indices=list(range(len(frames))))
            )
        data = {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.tensor(grids)}
        return BatchFeature({**data, "video_metadata": metadata}, tensor_type=return_tensors)


def tiny_qwen2_vl_processor() -> Qwen2VLProcessor:
    """Qwen2-VL preprocessing (smart resize to multiples of 28 px, CLIP stats, 2 x 2 merge) for images and videos."""
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        patch_size=PATCH_SIZE,
        merge_size=MERGE,
    )
    tokenizer = tiny_qwen_tokenizer()
    video_processor = FrameGroupVideoProcessor(image_processor)
    return OfflineQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )


def _text_config(tok: PreTrainedTokenizerFast, layers: int, hidden: int) -> dict[str, Any]:
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        # head_dim 16: 8 rotary frequencies, split (t, h, w) = 2 + 3 + 3 as Qwen's 16 + 24 + 24 of 64.
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        # Sharper attention than the default 0.02, so positions and kept sets change the greedy tokens.
        "initializer_range": 0.1,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": None,
    }


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int | None]:
    return {
        "image_token_id": tok.image_token_id,
        "video_token_id": tok.video_token_id,
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def tiny_qwen2_vl_config(vision_layers: int = 2, text_layers: int = 3, text_hidden: int = 64) -> Qwen2VLConfig:
    tok = tiny_qwen_tokenizer()
    vision = {
        "depth": vision_layers,
        "embed_dim": 32,
        "hidden_size": text_hidden,
        "mlp_ratio": 2,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(vision_config=vision, text_config=_text_config(tok, text_layers, text_hidden), **_ids(tok))


def tiny_qwen2_5_vl_config(vision_layers: int = 2, text_layers: int = 3, text_hidden: int = 64) -> Qwen2_5_VLConfig:
    """The last block windowed (full attention in block 0 only), so the received score runs within windows."""
    tok = tiny_qwen_tokenizer()
    vision = {
        "depth": vision_layers,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text_hidden,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": 2,
        "window_size": 56,  # 2 x 2 merged tokens per window (the real 112 px gives 4 x 4)
        "fullatt_block_indexes": [0],
    }
    return Qwen2_5_VLConfig(vision_config=vision, text_config=_text_config(tok, text_layers, text_hidden), **_ids(tok))


def tiny_qwen2_vl(seed: int = 0, attn_implementation: str = "sdpa", **sizes: int) -> Qwen2VLForConditionalGeneration:
    return seeded_model(Qwen2VLForConditionalGeneration, tiny_qwen2_vl_config(**sizes), seed, attn_implementation)


def tiny_qwen2_5_vl(
    seed: int = 0, attn_implementation: str = "sdpa", **sizes: int
) -> Qwen2_5_VLForConditionalGeneration:
    return seeded_model(Qwen2_5_VLForConditionalGeneration, tiny_qwen2_5_vl_config(**sizes), seed, attn_implementation)


class OfflineQwen3VLProcessor(Qwen3VLProcessor):
    """The stock Qwen3VLProcessor, constructible without torchvision (see OfflineQwen2VLProcessor)."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name == "video_processor":
            return offline_video_processor_class(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


def tiny_qwen3_vl_processor() -> Qwen3VLProcessor:
    """Qwen3-VL preprocessing: Qwen2-VL's image processor at Qwen3-VL's 16 px patches (32 px merged tokens)."""
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 4 * 32 * 32, "longest_edge": 20 * 32 * 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        patch_size=QWEN3_PATCH_SIZE,
        merge_size=MERGE,
    )
    tokenizer = tiny_qwen_tokenizer()
    video_processor = FrameGroupVideoProcessor(image_processor, patch_size=QWEN3_PATCH_SIZE)
    return OfflineQwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )


def tiny_qwen3_vl_config(vision_layers: int = 2, text_layers: int = 3, text_hidden: int = 64) -> Qwen3VLConfig:
    """Deepstack from both vision blocks, so the language model adds them after its layers 0 and 1."""
    tok = tiny_qwen_tokenizer()
    vision = {
        "depth": vision_layers,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text_hidden,
        "patch_size": QWEN3_PATCH_SIZE,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": list(range(vision_layers)),
    }
    text = _text_config(tok, text_layers, text_hidden)
    text["head_dim"] = text_hidden // text["num_attention_heads"]
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_interleaved": True}
    return Qwen3VLConfig(vision_config=vision, text_config=text, **_ids(tok))


def tiny_qwen3_vl(seed: int = 0, attn_implementation: str = "sdpa", **sizes: int) -> Qwen3VLForConditionalGeneration:
    return seeded_model(Qwen3VLForConditionalGeneration, tiny_qwen3_vl_config(**sizes), seed, attn_implementation)
