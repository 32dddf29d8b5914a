"""Tiny, randomly initialised Video-LLaVA-shaped model and offline processor for demos and tests.

Shapes match Video-LLaVA-7B-hf: 224 px CLIP input and 14 px patches (16 x 16 = 256 patches per view), 8 frames
per video, layer -2 features; images take 256 tokens ([CLS] cropped), videos 8 x 257 = 2056 (the Hugging Face
port keeps each frame's [CLS]). Nothing touches the hub, and nothing needs torchvision.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import (
    BatchFeature,
    PreTrainedTokenizerFast,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
    VideoLlavaProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import make_batched_videos

from fastervlm.tiny.llava import seeded_model, tiny_tokenizer, tiny_towers

FRAME_SIZE = 224
NUM_FRAMES = 8
FRAME_PATCHES = (FRAME_SIZE // 14) ** 2  # 256
VIDEO_SEQ_LENGTH = NUM_FRAMES * (FRAME_PATCHES + 1)  # 2056: the Hugging Face port keeps each frame's [CLS]


def tiny_video_llava_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny LLaVA tokenizer plus a `<video>` special token (id 261), so existing ids stay where they were."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["<video>"], special_tokens=True)
    return tokenizer


class FrameVideoProcessor(VideoProcessorMixin):
    """Video-LLaVA's video preprocessing done frame by frame with the PIL CLIP image processor.

    transformers 5.23's VideoLlavaVideoProcessor derives from BaseVideoProcessor, which requires torchvision.
    CLIPImageProcessorPil's defaults are the same steps (bicubic resize of the shortest edge to 224, 224 centre
    crop, rescale, CLIP mean/std), so each frame comes out as the stock video processor would make it.
    Returns pixel_values_videos of shape (videos, frames, 3, 224, 224).
    """

    model_input_names = ["pixel_values_videos"]  # noqa: RUF012 - transformers reads this class attribute

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frame_processor = CLIPImageProcessorPil()

    def preprocess(self, videos: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        # make_batched_videos is what the processor counts <video> tokens against: one list of frames per video.
        clips = [
            self.frame_processor(list(video), return_tensors="pt")["pixel_values"]
            for video in make_batched_videos(videos)
        ]
        return BatchFeature({"pixel_values_videos": torch.stack(clips)}, tensor_type=return_tensors)


class OfflineVideoLlavaProcessor(VideoLlavaProcessor):
    """The stock VideoLlavaProcessor, constructible without torchvision.

    Its constructor checks the video processor against `VideoProcessorMixin` looked up in a registry that
    transformers 5.23 replaces with a dummy when torchvision is missing (AttributeError: '_extra_content').
    Only that check is replaced, by a direct isinstance; the text expansion and batching are the stock code.
    """

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name != "video_processor":
            return super().check_argument_for_proper_class(argument_name, argument)
        if not isinstance(argument, VideoProcessorMixin):
            raise TypeError(f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}")
        return VideoProcessorMixin


def tiny_video_llava_processor() -> VideoLlavaProcessor:
    """Images: CLIP preprocessing at 224 px (256 <image> tokens); videos: per frame, 257 <video> tokens per frame."""
    return OfflineVideoLlavaProcessor(
        image_processor=CLIPImageProcessorPil(),
        video_processor=FrameVideoProcessor(),
        tokenizer=tiny_video_llava_tokenizer(),
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def tiny_video_llava_config(**sizes: int) -> VideoLlavaConfig:
    """Config whose special-token ids agree with `tiny_video_llava_tokenizer`; sizes: tiny_towers' keywords."""
    tok = tiny_video_llava_tokenizer()
    # A sample with a video and an image is already ~2.4k tokens.
    vision, text = tiny_towers(tok, image_size=FRAME_SIZE, max_positions=8192, **sizes)
    return VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=FRAME_PATCHES,
        video_seq_length=VIDEO_SEQ_LENGTH,
        pad_token_id=tok.pad_token_id,
    )


def tiny_video_llava(
    seed: int = 0, attn_implementation: str = "sdpa", **config_overrides: int
) -> VideoLlavaForConditionalGeneration:
    config = tiny_video_llava_config(**config_overrides)
    return seeded_model(VideoLlavaForConditionalGeneration, config, seed, attn_implementation)


def synthetic_video(frames: int = NUM_FRAMES, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Image.Image]:
    """Shapes drifting over a gradient: frames differ, so each frame's [CLS] keeps its own patches."""
    rng = random.Random(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1, c2 = (rng.uniform(0.2, 1.0) for _ in range(3))
    background = np.stack([255 * c0 * xx / width, 255 * c1 * yy / height, 255 * c2 * (1 - xx / width)], axis=-1)
    shapes = [
        (rng.randrange(width // 2), rng.randrange(height // 2), rng.randrange(30, width // 3), rng.randrange(-12, 13))
        for _ in range(3)
    ]
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in shapes]
    video = []
    for t in range(frames):
        frame = Image.fromarray(background.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(frame)
        for (x, y, extent, speed), colour in zip(shapes, colours, strict=True):
            x0 = (x + speed * t) % width
            draw.ellipse((x0, y, x0 + extent, y + extent), fill=colour)
        video.append(frame)
    return video
