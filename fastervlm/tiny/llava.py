"""Tiny, randomly initialised LLaVA-1.5-shaped model and offline processor for demos and tests.

Everything is built in memory so nothing touches the Hugging Face hub; shapes (336px CLIP input,
14px patches, 576 image tokens, layer -2 features) match LLaVA-1.5 so token-pruning code paths are real.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Without torchvision, `CLIPImageProcessor` only falls back to this class after a warning.
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

IMAGE_SIZE = 336
PATCH_SIZE = 14
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 576, CLS dropped by the "default" strategy
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: one token per byte, so any text encodes and round-trips."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        add_bos_token=True,  # like the Llama tokenizer LLaVA-1.5 ships with
        padding_side="left",  # batched generation needs prompts right-aligned
    )


# What LLaVA-1.5 and LLaVA-NeXT preprocess with: the image processor's CLIP settings at 336 px, and the
# processor's placeholder count (576 per view: the [CLS] token is cropped by the "default" strategy).
CLIP_336 = {
    "size": {"shortest_edge": IMAGE_SIZE},
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    "image_mean": OPENAI_CLIP_MEAN,
    "image_std": OPENAI_CLIP_STD,
    "do_convert_rgb": True,
}
PLACEHOLDERS = {"patch_size": PATCH_SIZE, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}


def tiny_processor() -> LlavaProcessor:
    """LLaVA-1.5 preprocessing (resize 336, centre crop, CLIP stats) without torchvision or downloads."""
    return LlavaProcessor(image_processor=CLIPImageProcessorPil(**CLIP_336), tokenizer=tiny_tokenizer(), **PLACEHOLDERS)


def tiny_towers(
    tokenizer: PreTrainedTokenizerFast,
    *,
    image_size: int = IMAGE_SIZE,
    max_positions: int = 2048,
    vision_layers: int = 3,
    vision_hidden: int = 32,
    text_layers: int = 2,
    text_hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int | None = None,
) -> tuple[CLIPVisionConfig, LlamaConfig]:
    """A tiny CLIP tower at the real geometry and a tiny Llama whose special ids are the tokenizer's."""
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=PATCH_SIZE,
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=4 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        # 5x Llama's default: attention is then sharp enough that positions and the kept set change the
        # greedy tokens, so token-level tests can tell a right runtime from a subtly wrong one.
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return vision, text


def tiny_llava_config(**sizes: int) -> LlavaConfig:
    """Config whose special-token ids agree with `tiny_tokenizer`, so processor output feeds the model as is.

    sizes: tiny_towers' keywords (vision_layers, text_layers, text_hidden, ...).
    """
    tok = tiny_tokenizer()
    vision, text = tiny_towers(tok, **sizes)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=IMAGE_SEQ_LENGTH,
        pad_token_id=tok.pad_token_id,
    )


def seeded_model(model_class: type[PreTrainedModel], config: PretrainedConfig, seed: int, attn: str) -> PreTrainedModel:
    """Seeded so tests can compare pruned and unpruned runs of the very same weights; eval, and generate
    told the special tokens so it runs without warnings."""
    torch.manual_seed(seed)
    model = model_class(config)
    model.set_attn_implementation(attn)
    model.eval()  # built from a config: fp32 already
    text = config.get_text_config()
    model.generation_config.update(
        pad_token_id=text.pad_token_id, bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id
    )
    return model


def tiny_llava(
    seed: int = 0, attn_implementation: str = "sdpa", **config_overrides: int
) -> LlavaForConditionalGeneration:
    return seeded_model(LlavaForConditionalGeneration, tiny_llava_config(**config_overrides), seed, attn_implementation)


def synthetic_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Varied sizes exercise resize/crop; gradients and shapes make images distinguishable to the model."""
    sizes = [(400, 300), (336, 336), (512, 384), (300, 450)]
    rng = random.Random(seed)
    images = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c0, c1, c2 = (rng.uniform(0.2, 1.0) for _ in range(3))
        rgb = np.stack([255 * c0 * xx / w, 255 * c1 * yy / h, 255 * c2 * (1 - xx / w)], axis=-1)
        img = Image.fromarray(rgb.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.randrange(w // 2), rng.randrange(h // 2)
            box = (x0, y0, x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2))
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        images.append(img)
    return images
