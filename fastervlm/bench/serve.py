"""vLLM serving throughput and time to first token under N concurrent requests, pruned against unpruned.

Runs in the serving venv (scripts/setup_vllm.sh). The model is a full-depth LLaVA-1.5 architecture with random
weights (widths x scale), saved once and served by vLLM's engine through the plugin; speed does not depend on
weight values. "none" is the plugin at ratio 0 (all 576 tokens; the [CLS] row is the only extra work), since
vLLM's stock LLaVA class cannot load a checkpoint saved by transformers >= 5.10 (see vllm_llava.load_weights).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastervlm.tiny import synthetic_images, tiny_processor

PROMPT = "USER: <image>\nDescribe the picture in detail. ASSISTANT:"
SERVED_ARCHS = ("llava-1.5-7b", "llava-1.5-13b")


@dataclass(frozen=True)
class ServeRow:
    arch: str
    method: str
    ratio: float | None
    tokens: int | None
    visual_tokens: int  # placeholders per image the server laid out
    requests: int
    concurrency: int
    new_tokens: int
    wall_s: float
    requests_s: float
    output_tok_s: float
    ttft_ms_mean: float
    ttft_ms_p50: float
    ttft_ms_max: float

    def as_dict(self) -> dict:
        return asdict(self)


def save_checkpoint(arch_name: str, scale: float, path: Path) -> Path:
    from fastervlm.bench.archs import arch

    if arch_name not in SERVED_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(SERVED_ARCHS)} for bench serve, got {arch_name!r}")
    arch(arch_name).model(scale).save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


def serve_row(
    checkpoint: Path, arch_name: str, method: str, budget: dict, requests: int, concurrency: int, new_tokens: int
) -> ServeRow:
    """One engine, one warm-up request, then `requests` requests submitted at once, `concurrency` running."""
    from vllm import LLM, SamplingParams

    options = {"method": "fastervlm", "ratio": 0.0} if method == "none" else {"method": method, **budget}
    llm = LLM(
        model=str(checkpoint),
        dtype="float32",
        max_model_len=2048,
        max_num_seqs=concurrency,
        enforce_eager=True,
        limit_mm_per_prompt={"image": 1},
        mm_processor_cache_gb=0,
        disable_log_stats=False,
        seed=0,
        hf_overrides={"architectures": ["FasterVLMLlavaForConditionalGeneration"], "fastervlm": options},
    )
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    prompts = [{"prompt": PROMPT, "multi_modal_data": {"image": image}} for image in synthetic_images(requests)]
    llm.generate(prompts[:1], params, use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    ttft = [o.metrics.first_token_latency * 1000 for o in outputs if o.metrics is not None]
    if len(ttft) != len(outputs):
        raise RuntimeError("vLLM returned no request metrics; time to first token needs disable_log_stats=False")
    image_id = llm.get_tokenizer().convert_tokens_to_ids("<image>")
    del llm
    return ServeRow(
        arch=arch_name,
        method=method,
        ratio=budget.get("ratio") if method != "none" else 0.0,
        tokens=budget.get("tokens") if method != "none" else None,
        visual_tokens=outputs[0].prompt_token_ids.count(image_id),
        requests=requests,
        concurrency=concurrency,
        new_tokens=new_tokens,
        wall_s=wall,
        requests_s=requests / wall,
        output_tok_s=sum(len(o.outputs[0].token_ids) for o in outputs) / wall,
        ttft_ms_mean=statistics.fmean(ttft),
        ttft_ms_p50=statistics.median(ttft),
        ttft_ms_max=max(ttft),
    )
