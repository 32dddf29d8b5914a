"""Tiny, randomly initialised LLaVA-NeXT-shaped model and offline processor for demos and tests.

Same towers and tokenizer as the tiny LLaVA-1.5, plus LLaVA-NeXT's anyres geometry: 336 px views of 14 px
patches (576 per view), the real grid pinpoints, unpadding and newline tokens, so an image becomes a base view
and 2-4 crops and up to 2,928 placeholder tokens (1,368 for a 400 x 300 image), as with the real checkpoints.
"""

from __future__ import annotations

from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

# Without torchvision, `LlavaNextImageProcessor` only falls back to this class after a warning.
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from fastervlm.tiny.llava import (
    CLIP_336,
    IMAGE_SEQ_LENGTH,
    PLACEHOLDERS,
    seeded_model,
    tiny_llava_config,
    tiny_tokenizer,
)

# llava-hf/llava-v1.6-*: (height, width) resolutions an image is resized and padded to before cropping.
GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
MAX_POSITIONS = 4096  # base view + 2x2 crops + newlines is ~2,900 tokens before any text


def tiny_llava_next_processor() -> LlavaNextProcessor:
    """LLaVA-NeXT preprocessing (anyres crops, base view, CLIP stats) without torchvision or downloads."""
    image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=GRID_PINPOINTS, **CLIP_336)
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(), **PLACEHOLDERS)


def tiny_llava_next_config(**sizes: int) -> LlavaNextConfig:
    """The tiny LLaVA-1.5's towers and token ids (so processor output feeds the model as is), with anyres on top."""
    llava = tiny_llava_config(**sizes)
    text = llava.text_config
    text.max_position_embeddings = MAX_POSITIONS
    return LlavaNextConfig(
        vision_config=llava.vision_config,
        text_config=text,
        image_token_id=llava.image_token_id,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=IMAGE_SEQ_LENGTH,
        pad_token_id=llava.pad_token_id,
    )


def tiny_llava_next(
    seed: int = 0, attn_implementation: str = "sdpa", **sizes: int
) -> LlavaNextForConditionalGeneration:
    return seeded_model(LlavaNextForConditionalGeneration, tiny_llava_next_config(**sizes), seed, attn_implementation)
