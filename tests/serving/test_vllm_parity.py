"""The vLLM plugin against transformers + fastervlm.prune: same checkpoint, image and ratio, same greedy tokens."""

from __future__ import annotations

import pytest

from tests.serving.conftest import LOGPROB_TOLERANCE, NEW_TOKENS, OPTIONS, PROMPT, require_vllm

require_vllm()

from fastervlm.budget import kept_count  # noqa: E402
from fastervlm.tiny import IMAGE_SEQ_LENGTH  # noqa: E402

# FasterVLM itself, and VisionZip: a merging method that also reads the keys and the [CLS] token's features.
CASES = [OPTIONS, {"method": "visionzip", "tokens": 64}]


@pytest.mark.parametrize("options", CASES, ids=lambda o: o["method"])
def test_greedy_tokens_and_kept_indices_equal_transformers(checkpoint, image, offline, options):
    from vllm import LLM, SamplingParams

    from fastervlm.serving.vllm_plugin import register

    register()  # what vLLM's entry point does in every engine process
    llm = LLM(
        model=str(checkpoint),
        dtype="float32",
        max_model_len=1024,
        max_num_seqs=2,
        enforce_eager=True,
        limit_mm_per_prompt={"image": 1},
        mm_processor_cache_gb=0,
        hf_overrides={"architectures": ["FasterVLMLlavaForConditionalGeneration"], "fastervlm": options},
    )
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=0)
    [result] = llm.generate({"prompt": PROMPT, "multi_modal_data": {"image": image}}, params)
    [kept] = llm.apply_model(lambda model: model.last_kept)

    expected = offline(options)
    assert kept == [expected["kept"]]
    assert result.prompt_token_ids == expected["prompt_ids"]
    output = result.outputs[0]
    assert list(output.token_ids) == expected["tokens"]
    logprobs = [step[t].logprob for step, t in zip(output.logprobs, output.token_ids, strict=True)]
    assert logprobs == pytest.approx(expected["logprobs"], abs=LOGPROB_TOLERANCE)
    del llm


def test_fastervlm_keeps_the_papers_count(offline):
    assert len(offline(OPTIONS)["kept"]) == kept_count(IMAGE_SEQ_LENGTH, OPTIONS["ratio"])
