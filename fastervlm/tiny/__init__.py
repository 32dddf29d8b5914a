"""Tiny, randomly initialised models of the real architectures, and offline processors, for demos and tests."""

from fastervlm.tiny.llava import (
    IMAGE_SEQ_LENGTH,
    IMAGE_SIZE,
    PATCH_SIZE,
    synthetic_images,
    tiny_llava,
    tiny_llava_config,
    tiny_processor,
    tiny_tokenizer,
)
from fastervlm.tiny.llava_next import tiny_llava_next, tiny_llava_next_config, tiny_llava_next_processor
from fastervlm.tiny.video_llava import (
    NUM_FRAMES,
    synthetic_video,
    tiny_video_llava,
    tiny_video_llava_config,
    tiny_video_llava_processor,
)

__all__ = [
    "IMAGE_SEQ_LENGTH",
    "IMAGE_SIZE",
    "NUM_FRAMES",
    "PATCH_SIZE",
    "synthetic_images",
    "synthetic_video",
    "tiny_llava",
    "tiny_llava_config",
    "tiny_llava_next",
    "tiny_llava_next_config",
    "tiny_llava_next_processor",
    "tiny_processor",
    "tiny_tokenizer",
    "tiny_video_llava",
    "tiny_video_llava_config",
    "tiny_video_llava_processor",
]
