"""The real architectures the paper measures, written as data (no download), and their depth-true tiny twins.

A twin has the architecture's depth and visual geometry (patches per view, views per sample, LLM layers) but
tiny widths: running a method on it through the real runtime gives the exact token count entering every
layer, which the FLOP counter then prices at full width. So a new method needs no formula of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig

from fastervlm.tiny import synthetic_images, tiny_llava, tiny_processor


@dataclass(frozen=True)
class Arch:
    """One full-size model: vision tower, two-layer MLP projector, Llama-family LLM."""

    name: str
    vision: CLIPVisionConfig
    text: LlamaConfig
    views: int  # vision-tower passes per sample: 1 image, 5 anyres views, 8 frames
    twin: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]  # depth-true tiny model and one sample

    @property
    def patches_per_view(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2


def clip_vit_l(image_size: int) -> CLIPVisionConfig:
    """CLIP ViT-L/14 (LLaVA's tower at 336 px; LanguageBind's, Video-LLaVA's, at 224 px)."""
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        projection_dim=768,
    )


def vicuna(size: str) -> LlamaConfig:
    """Vicuna-v1.5 7B / 13B (Llama-2 shapes); 32064 = Llama's 32000 plus LLaVA-hf's added tokens."""
    hidden, inter, layers, heads = {"7b": (4096, 11008, 32, 32), "13b": (5120, 13824, 40, 40)}[size]
    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=32064,
        max_position_embeddings=4096,
    )


TEXT_TOKENS = 64  # prompt tokens around the image in every twin sample (the paper's FLOPs count only visual ones)


def llava15_twin(layers: int) -> Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]:
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        model = tiny_llava(text_layers=layers)
        processor = tiny_processor()
        text = "USER: <image>\n" + "x" * (TEXT_TOKENS - 16) + " ASSISTANT:"
        inputs = processor(images=synthetic_images(1), text=[text], return_tensors="pt")
        return model, dict(inputs)

    return build


ARCHS: dict[str, Arch] = {
    "llava-1.5-7b": Arch("llava-1.5-7b", clip_vit_l(336), vicuna("7b"), 1, llava15_twin(32)),
    "llava-1.5-13b": Arch("llava-1.5-13b", clip_vit_l(336), vicuna("13b"), 1, llava15_twin(40)),
}


def arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[name]
