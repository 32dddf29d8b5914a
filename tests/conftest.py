"""Tiny seeded LLaVA-1.5-shaped models, an offline processor and synthetic batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import BatchFeature, LlavaForConditionalGeneration, LlavaProcessor

from fastervlm.tiny import synthetic_images, tiny_llava, tiny_processor

PROMPTS = ["USER: <image>\nWhat is in the picture? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"]


@pytest.fixture(scope="session")
def processor() -> LlavaProcessor:
    return tiny_processor()


@pytest.fixture
def make_llava() -> Callable[..., LlavaForConditionalGeneration]:
    """Fresh model per call: prune() changes the instance, and two seeds-alike models make a reference."""
    return tiny_llava


@pytest.fixture
def tiny(make_llava) -> LlavaForConditionalGeneration:
    return make_llava(seed=0)


@pytest.fixture
def no_eager_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of LLaMA's eager attention kernel fails the test: in-LLM methods must keep the sdpa kernel."""
    import transformers.models.llama.modeling_llama as llama

    def refuse(*args, **kwargs):
        raise AssertionError("the eager attention kernel ran")

    monkeypatch.setattr(llama, "eager_attention_forward", refuse)


@pytest.fixture(scope="session")
def batch(processor: LlavaProcessor) -> BatchFeature:
    """Two images of different sizes, prompts of different lengths: left padding is exercised."""
    return processor(images=synthetic_images(2), text=PROMPTS, padding=True, return_tensors="pt")


@pytest.fixture(scope="session")
def ragged_batch(processor: LlavaProcessor) -> BatchFeature:
    """Sample 0 carries two images, sample 1 one: samples lose different numbers of tokens."""
    prompts = ["USER: <image>\n<image>\nCompare them. ASSISTANT:", PROMPTS[1]]
    return processor(images=synthetic_images(3, seed=1), text=prompts, padding=True, return_tensors="pt")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cdpruner_options() -> dict[str, str]:
    """CDPruner's by-name loads pointed at local stand-ins: a tiny CLIP and the tiny LLM tokenizer."""
    from fastervlm.tiny.clip_text import tiny_cdpruner_options

    return tiny_cdpruner_options()
