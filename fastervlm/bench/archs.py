"""The real architectures the paper measures, written as data (no download), at any width.

`Arch.model(scale)` builds the architecture with random weights (speed does not depend on their values) and
every width multiplied by `scale`, depth kept, so the vision / LLM cost balance stays the real model's.
`Arch.twin()` is the depth-true tiny model: running a method on it through the real runtime gives the exact
token count entering every layer, which the FLOP counter prices at full width; so a new method needs no
FLOPs formula of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    PretrainedConfig,
    VideoLlavaForConditionalGeneration,
)

from fastervlm.bench.families import FAMILY_ARCHS, FamilyArch
from fastervlm.models.llava_next import paper_processor
from fastervlm.tiny import (
    synthetic_images,
    synthetic_video,
    tiny_llava_config,
    tiny_llava_next_config,
    tiny_processor,
    tiny_video_llava_config,
)
from fastervlm.tiny.llava import seeded_model
from fastervlm.tiny.llava_next import tiny_llava_next_processor
from fastervlm.tiny.video_llava import tiny_video_llava_processor

TEXT_TOKENS = 64  # prompt tokens around the image in every sample (the paper's FLOPs count only visual ones)
TWIN_WIDTH = 64


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


def head_dim(config: CLIPVisionConfig | LlamaConfig) -> int:
    return config.hidden_size // config.num_attention_heads


def widths(config: CLIPVisionConfig | LlamaConfig, hidden: int) -> dict[str, int]:
    """Widths for a new hidden size: intermediate in proportion, the real head size, fewer heads."""
    size = min(head_dim(config), hidden)
    heads = hidden // size
    out = {
        "hidden_size": hidden,
        "intermediate_size": config.intermediate_size * hidden // config.hidden_size,
        "num_attention_heads": heads,
    }
    if isinstance(config, LlamaConfig):
        out |= {"num_key_value_heads": heads, "head_dim": size}
    return out


def with_towers(config: PretrainedConfig, vision: CLIPVisionConfig, text: LlamaConfig) -> PretrainedConfig:
    """A tiny family config (its token ids and the real visual geometry) carrying the architecture's towers."""
    tiny_text = config.text_config
    text.pad_token_id, text.bos_token_id, text.eos_token_id = (
        tiny_text.pad_token_id,
        tiny_text.bos_token_id,
        tiny_text.eos_token_id,
    )
    config.vision_config, config.text_config = vision, text
    return config


def llava15(vision: CLIPVisionConfig, text: LlamaConfig, seed: int) -> nn.Module:
    return seeded_model(LlavaForConditionalGeneration, with_towers(tiny_llava_config(), vision, text), seed, "sdpa")


def llava_next(vision: CLIPVisionConfig, text: LlamaConfig, seed: int) -> nn.Module:
    config = with_towers(tiny_llava_next_config(), vision, text)
    return seeded_model(LlavaNextForConditionalGeneration, config, seed, "sdpa")


def video_llava(vision: CLIPVisionConfig, text: LlamaConfig, seed: int) -> nn.Module:
    config = with_towers(tiny_video_llava_config(), vision, text)
    return seeded_model(VideoLlavaForConditionalGeneration, config, seed, "sdpa")


def prompt(placeholder: str) -> str:
    return f"USER: {placeholder}\n" + "x" * (TEXT_TOKENS - 16) + " ASSISTANT:"


def llava15_sample(batch: int) -> dict[str, torch.Tensor]:
    images = synthetic_images(1) * batch
    return dict(tiny_processor()(images=images, text=[prompt("<image>")] * batch, return_tensors="pt"))


def llava_next_sample(batch: int) -> dict[str, torch.Tensor]:
    """The paper's setting: the grid pinned to 672 x 672, base + 4 crops = 2880 placeholders per image."""
    processor = paper_processor(tiny_llava_next_processor())
    images = synthetic_images(1) * batch
    return dict(processor(images=images, text=[prompt("<image>")] * batch, return_tensors="pt"))


def video_llava_sample(batch: int) -> dict[str, torch.Tensor]:
    videos = [synthetic_video()] * batch
    return dict(tiny_video_llava_processor()(videos=videos, text=[prompt("<video>")] * batch, return_tensors="pt"))


@dataclass(frozen=True)
class Arch:
    """One full-size model: vision tower, two-layer MLP projector, Llama-family LLM."""

    name: str
    vision: CLIPVisionConfig
    text: LlamaConfig
    views: int  # vision-tower passes per sample: 1 image, 5 anyres views, 8 frames
    build: Callable[[CLIPVisionConfig, LlamaConfig, int], nn.Module]
    sample: Callable[[int], dict[str, torch.Tensor]]
    # The paper's setting, passed to every prune(); "none" then runs that layout unpruned (fastervlm at ratio 0).
    options: dict[str, str] = field(default_factory=dict)
    tower: str = "vision_tower"  # the base model's attribute holding the tower the views go through
    score: str = "cls"  # the patch score fastervlm runs on it (see FasterVLMConfig.score)

    @property
    def patches_per_view(self) -> int:
        return (self.vision.image_size // self.vision.patch_size) ** 2

    def model(self, scale: float = 1.0, seed: int = 0) -> nn.Module:
        """Random weights, widths x scale, depth kept."""
        vision = self.vision.__class__(**{**self.vision.to_dict(), **widths(self.vision, scaled(self.vision, scale))})
        text = self.text.__class__(**{**self.text.to_dict(), **widths(self.text, scaled(self.text, scale))})
        return self.build(vision, text, seed)

    def twin(self) -> nn.Module:
        """Full depth, tiny width: what a method keeps at each layer, fast on any CPU."""
        vision = self.vision.__class__(
            **{**self.vision.to_dict(), **widths(self.vision, 32), "num_hidden_layers": 3, "num_attention_heads": 4}
        )
        text = self.text.__class__(
            **{
                **self.text.to_dict(),
                **widths(self.text, TWIN_WIDTH),
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
            }
        )
        return self.build(vision, text, 0)

    def scaled_name(self, scale: float) -> str:
        return self.name if scale == 1.0 else f"{self.name}@{scale:g}"

    def tower_inputs(self) -> tuple[torch.Tensor, ...]:
        """The vision tower's call for one sample, as fake tensors: every view's pixels."""
        with FakeTensorMode(allow_non_fake_inputs=True):
            size = self.vision.image_size
            return (torch.empty(self.views, 3, size, size),)

    def projector_of(self, base: nn.Module) -> nn.Module | None:
        return base.multi_modal_projector


def scaled(config: CLIPVisionConfig | LlamaConfig, scale: float) -> int:
    """hidden_size x scale, rounded to whole heads of the real head size."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1] (every width multiplied by it), got {scale!r}")
    size = head_dim(config)
    return max(size, round(config.hidden_size * scale / size) * size)


PAPER = {"mode": "paper"}
ARCHS: dict[str, Arch | FamilyArch] = {
    "llava-1.5-7b": Arch("llava-1.5-7b", clip_vit_l(336), vicuna("7b"), 1, llava15, llava15_sample),
    "llava-1.5-13b": Arch("llava-1.5-13b", clip_vit_l(336), vicuna("13b"), 1, llava15, llava15_sample),
    "llava-next-7b": Arch("llava-next-7b", clip_vit_l(336), vicuna("7b"), 5, llava_next, llava_next_sample, PAPER),
    "video-llava-7b": Arch(
        "video-llava-7b", clip_vit_l(224), vicuna("7b"), 8, video_llava, video_llava_sample, PAPER, "video_tower"
    ),
    **FAMILY_ARCHS,  # Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision: fastervlm.bench.families
}


def arch(name: str) -> Arch | FamilyArch:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[name]
