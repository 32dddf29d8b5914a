"""Tiny, randomly initialised LLaVA-OneVision-shaped model and offline processor for demos and tests.

OneVision's pipeline at a small scale: a SigLIP tower (no [CLS]) on 84 px views of 14 px patches (6 x 6 = 36 per
view; the real model: 384 px, 27 x 27 = 729), anyres pinpoints up to 3 x 3 views (the real ones go to 6 x 6 with
"anyres_max_9"), unpadding and newline tokens; the tiny LLaVA tokenizer and Llama, nothing from the hub.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    BatchFeature,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    SiglipVisionConfig,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Without torchvision, `LlavaOnevisionImageProcessor` only falls back to this class after a warning.
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import make_batched_videos

from fastervlm.tiny.llava import seeded_model, tiny_towers
from fastervlm.tiny.video_llava import tiny_video_llava_tokenizer

VIEW_SIZE = 84
PATCH_SIZE = 14
VIEW_PATCHES = (VIEW_SIZE // PATCH_SIZE) ** 2  # 36
GRID_PINPOINTS = [[VIEW_SIZE * rows, VIEW_SIZE * cols] for rows in (1, 2, 3) for cols in (1, 2, 3)]


class FrameVideoProcessor(VideoProcessorMixin):
    """LLaVA-OneVision's video preprocessing without torchvision (which its stock video processor needs).

    The stock steps, frame by frame: bicubic resize to the view size (no crop), rescale, normalise with CLIP's
    statistics. Returns pixel_values_videos (videos, frames, 3, side, side).
    """

    model_input_names = ["pixel_values_videos"]  # noqa: RUF012 - transformers reads this class attribute

    def __init__(self, side: int = VIEW_SIZE) -> None:
        self.side = side

    def preprocess(self, videos: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        clips = []
        for frames in make_batched_videos(videos):
            resized = [
                np.asarray(Image.fromarray(np.asarray(f)).convert("RGB").resize((self.side, self.side), Image.BICUBIC))
                for f in frames
            ]
            clips.append((torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255 - mean) / std)
        return BatchFeature({"pixel_values_videos": torch.stack(clips)}, tensor_type=return_tensors)


class OfflineLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    """The stock LlavaOnevisionProcessor, constructible without torchvision.

    transformers 5.23 looks the video processor up in a registry it replaces with a dummy when torchvision is
    missing (AttributeError: '_extra_content'); that check alone is replaced, by a direct isinstance. The
    placeholder counts (unpadding, newlines, anyres_max_9, pooled frames) and batching are the stock code.
    """

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name == "video_processor" and argument is None:
            return type(None)
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)


def tiny_llava_onevision_processor() -> LlavaOnevisionProcessor:
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": VIEW_SIZE, "width": VIEW_SIZE},
        image_grid_pinpoints=GRID_PINPOINTS,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    return OfflineLlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tiny_video_llava_tokenizer(),
        video_processor=FrameVideoProcessor(),
        num_image_tokens=VIEW_PATCHES,
        vision_feature_select_strategy="full",
    )


def tiny_llava_onevision_config(**sizes: int) -> LlavaOnevisionConfig:
    """Token ids of the tiny tokenizer, a tiny SigLIP at 84 px, the tiny Llama; sizes: tiny_towers' keywords."""
    tok = tiny_video_llava_tokenizer()
    clip, text = tiny_towers(tok, image_size=VIEW_SIZE, **sizes)
    vision = SiglipVisionConfig(
        image_size=VIEW_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=clip.hidden_size,
        intermediate_size=clip.intermediate_size,
        num_hidden_layers=clip.num_hidden_layers,
        num_attention_heads=clip.num_attention_heads,
        vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        pad_token_id=tok.pad_token_id,
    )


def tiny_llava_onevision(
    seed: int = 0, attn_implementation: str = "sdpa", **sizes: int
) -> LlavaOnevisionForConditionalGeneration:
    return seeded_model(
        LlavaOnevisionForConditionalGeneration, tiny_llava_onevision_config(**sizes), seed, attn_implementation
    )
