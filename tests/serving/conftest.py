"""The serving tests' shared pieces: the vLLM gate, one tiny saved checkpoint vLLM can load, and the offline
answer (transformers + fastervlm.prune) the served ones must equal."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import fastervlm
from fastervlm.tiny import synthetic_images, tiny_llava, tiny_processor

PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
OPTIONS = {"method": "fastervlm", "ratio": 0.9}
NEW_TOKENS = 8
LOGPROB_TOLERANCE = 1e-4  # fp32 on both sides; vLLM's kernels differ from transformers' sdpa
# vLLM's CPU attention needs a head size of at least 32: two heads of 32 in both towers.
SERVABLE_SIZES = {"vision_hidden": 64, "text_hidden": 64, "heads": 2, "kv_heads": 2}


def require_vllm() -> None:
    """Skip where vLLM is absent (the project's .venv has none); fail instead when FASTERVLM_REQUIRE_VLLM=1,
    so a serving venv that lost vLLM cannot pass by skipping."""
    if importlib.util.find_spec("vllm") is not None:
        return
    reason = "vLLM is not installed: the serving tests run in .venv-vllm (make vllm-env test-vllm)"
    if os.environ.get("FASTERVLM_REQUIRE_VLLM") == "1":
        pytest.fail(f"FASTERVLM_REQUIRE_VLLM=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-1.5 saved as transformers saves it (no `vision_model.` level in the vision tower's names)."""
    path = tmp_path_factory.mktemp("tiny-llava-vllm")
    model = tiny_llava(seed=0, **SERVABLE_SIZES)
    model.save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def image():
    return synthetic_images(1, seed=5)[0]


@pytest.fixture(scope="session")
def offline(checkpoint, image) -> Callable[[dict], dict]:
    """Answers of transformers + fastervlm.prune on the saved checkpoint, per method options (cached)."""
    answers: dict[str, dict] = {}

    def answer(options: dict) -> dict:
        key = json.dumps(options, sort_keys=True)
        if key not in answers:
            answers[key] = offline_answer(checkpoint, image, options)
        return answers[key]

    return answer


def offline_answer(checkpoint: Path, image, options: dict) -> dict:
    """The prompt ids with <image> as the placeholders the pruned model fed its LLM (what a server must lay
    out), the greedy tokens and their log-probabilities, and the image's kept patch indices."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # vLLM runs with ignore_eos: both go the full length
    options = dict(options)
    fastervlm.prune(model, method=options.pop("method"), **options)
    batch = processor(images=[image], text=[PROMPT], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    tokens = out.sequences[0, batch["input_ids"].shape[1] :]
    report = fastervlm.last_report(model)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    ids = processor.tokenizer(PROMPT)["input_ids"]
    prompt = [t for i in ids for t in ([i] * report.visual_tokens_out if i == image_id else [i])]
    return {
        "prompt_ids": prompt,
        "tokens": tokens.tolist(),
        # Each greedy token's log-probability: 8 argmaxes alone can miss a slightly wrong visual token.
        "logprobs": [
            torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens, strict=True)
        ],
        "kept": report.kept_indices[0][0].tolist(),
    }
