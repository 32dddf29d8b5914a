"""Loading a LLaVA model, asking it questions, and timing it unpruned against pruned: what the CLI runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich import box
from rich.progress import Progress
from rich.table import Table
from torch import nn
from transformers import (
    AutoProcessor,
    BatchFeature,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    ProcessorMixin,
)

import fastervlm
from fastervlm.methods import MethodConfig, method_name
from fastervlm.models import adapter_for
from fastervlm.report import Report
from fastervlm.tiny import tiny_llava, tiny_llava_next, tiny_llava_next_processor, tiny_processor

TINY = "tiny"  # --model value (and the default) naming the embedded random model


def same_view(image: Image.Image, size: int) -> Image.Image:
    """LLaVA-1.5's only view is the centre crop, which the overlay itself cuts."""
    return image


def squashed_view(image: Image.Image, size: int) -> Image.Image:
    """LLaVA-NeXT's base view: the whole image resized to size x size, aspect ratio not kept (bicubic, as its
    image processor does); the overlay's crop then leaves it as is."""
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class Arch:
    """A model family the CLI runs: its transformers class, its embedded tiny stand-in, the view it draws."""

    name: str
    model_class: type[nn.Module]
    tiny_model: Callable[..., nn.Module]
    tiny_processor: Callable[[], ProcessorMixin]
    example: str  # a hub id with real weights
    geometry: str  # the tiny model's visual tokens, for the random-weights note
    first_view: Callable[[Image.Image, int], Image.Image]  # the image as the report's first view saw it


ARCHS: dict[str, Arch] = {
    "llava-1.5": Arch(
        "LLaVA-1.5",
        LlavaForConditionalGeneration,
        tiny_llava,
        tiny_processor,
        "llava-hf/llava-1.5-7b-hf",
        "real 336 px / 14 px geometry, 576 visual tokens per image",
        same_view,
    ),
    "llava-next": Arch(
        "LLaVA-NeXT",
        LlavaNextForConditionalGeneration,
        tiny_llava_next,
        tiny_llava_next_processor,
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "real 336 px / 14 px geometry and anyres grid: a base view plus 2-4 crops, up to 2,928 visual tokens per image",
        squashed_view,
    ),
}


def load_llava(
    model: str | None, *, arch: str = "llava-1.5", attn: str = "sdpa", device: str = "cpu"
) -> tuple[nn.Module, ProcessorMixin]:
    """A LLaVA-family model and its processor, ready for batched generation.

    model: a hub id or a local `save_pretrained` directory; None or "tiny" gives the arch's embedded tiny model
    with random weights (real geometry, nothing downloaded). arch: a key of ARCHS.
    """
    family = ARCHS[arch]
    if model is None or model == TINY:
        llava, processor = family.tiny_model(attn_implementation=attn), family.tiny_processor()
    else:
        if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
            # Otherwise the hub client rejects it as a malformed repo id, which hides the real problem.
            raise FileNotFoundError(f"--model {model!r} looks like a path, but no such directory exists")
        processor = AutoProcessor.from_pretrained(model)
        # dtype="auto": the checkpoint's own dtype (fp16 for llava-hf); transformers 5 renamed torch_dtype.
        llava = family.model_class.from_pretrained(model, dtype="auto", attn_implementation=attn)
    # generate() appends new tokens after the last column, so batched prompts must be padded on the left.
    processor.tokenizer.padding_side = "left"
    return llava.to(device).eval(), processor


def llava_prompt(question: str) -> str:
    """LLaVA-1.5's conversation template; a prompt that already holds <image> is taken as the caller's own."""
    return question if "<image>" in question else f"USER: <image>\n{question} ASSISTANT:"


def batch(model: nn.Module, processor: ProcessorMixin, images: list[Image.Image], question: str) -> BatchFeature:
    """One prompt per image, padded into one batch, on the model's device and (for pixels) its dtype."""
    text = [llava_prompt(question)] * len(images)
    inputs = processor(images=images, text=text, padding=True, return_tensors="pt")
    return inputs.to(device=model.device, dtype=model.dtype)


def answers(model: nn.Module, processor: ProcessorMixin, inputs: BatchFeature, max_new_tokens: int) -> list[str]:
    """Greedy answers, prompt stripped."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def visual_tokens(model: nn.Module, inputs: BatchFeature) -> int:
    """Image placeholder tokens in the batch: what the unpruned model feeds its LLM."""
    return sum(placeholders_per_sample(model, inputs))


def placeholders_per_sample(model: nn.Module, inputs: BatchFeature) -> list[int]:
    ids = inputs["input_ids"]
    return sum((ids == m.token_id).sum(dim=1) for m in adapter_for(model).modalities(model)).tolist()


def visual_tokens_per_sample(model: nn.Module, inputs: BatchFeature, report: Report) -> list[int]:
    """Visual tokens each sample fed the LLM: its input length less its text tokens.

    Not the report's kept_per_sample, which counts kept patches only; LLaVA-NeXT also feeds newline tokens.
    """
    real = inputs["attention_mask"].sum(dim=1).tolist()
    text = [r - p for r, p in zip(real, placeholders_per_sample(model, inputs), strict=True)]
    return [n - t for n, t in zip(report.llm_input_lengths, text, strict=True)]


def applied_report(model: nn.Module, visual_tokens_in: int) -> Report:
    """The last prefill's report, refusing a run in which pruning silently did not happen."""
    report = fastervlm.last_report(model)
    if report is None or not report.applied:
        reason = report.note if report is not None else "no pruned forward has run"
        raise RuntimeError(f"pruning did not apply to this run: {reason}")
    if report.visual_tokens_in != visual_tokens_in:
        raise RuntimeError(
            f"report counts {report.visual_tokens_in} visual tokens in, the batch holds {visual_tokens_in}"
        )
    return report


def summary(report: Report) -> str:
    return (
        f"{report.method}: visual tokens into the LLM {report.visual_tokens_in} -> {report.visual_tokens_out} "
        f"(kept per image: {', '.join(map(str, report.kept_per_sample))})"
    )


@dataclass(frozen=True)
class Run:
    """One row of the demo table; config None is the unpruned model."""

    config: MethodConfig | None
    visual_tokens: int
    kept_per_image: list[int]  # visual tokens each sample (one image in the demo) fed the LLM
    prefill_ms: float
    generate_ms: float
    first_kept: torch.Tensor | None  # first image's first view: kept patch indices, raster order


def median_ms(step: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of `repeats` calls; CUDA is synchronised so queued kernels are counted."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(
    model: nn.Module, inputs: BatchFeature, config: MethodConfig | None, *, repeats: int, max_new_tokens: int
) -> Run:
    """Time one prefill and one greedy generate of the batch, pruned with `config` (then unpruned again).

    min_new_tokens = max_new_tokens makes every run decode the same number of tokens, so the speed-up
    compares equal work rather than answers that happen to stop at different lengths.
    """
    visual_in = visual_tokens(model, inputs)

    def prefill() -> None:
        model(**inputs)

    def generate() -> None:
        model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)

    if config is not None:
        fastervlm.prune(model, config)
    try:
        with torch.no_grad():
            prefill()  # warm-ups: first calls pay for allocation and kernel selection
            prefill_ms = median_ms(prefill, repeats, model.device)
            report = applied_report(model, visual_in) if config is not None else None
            generate()
            generate_ms = median_ms(generate, repeats, model.device)
            if config is not None:
                applied_report(model, visual_in)
    finally:
        if config is not None:
            fastervlm.unprune(model)
    if report is None:
        return Run(None, visual_in, placeholders_per_sample(model, inputs), prefill_ms, generate_ms, None)
    first = report.kept_indices[0][0]
    per_sample = visual_tokens_per_sample(model, inputs, report)
    return Run(config, report.visual_tokens_out, per_sample, prefill_ms, generate_ms, first)


def run_all(
    model: nn.Module,
    inputs: BatchFeature,
    configs: list[MethodConfig],
    *,
    repeats: int,
    max_new_tokens: int,
    progress: Progress,
) -> list[Run]:
    """The unpruned run first (the speed-up baseline), then one run per config, on the same model object."""
    runs = []
    plan: list[MethodConfig | None] = [None, *configs]
    task = progress.add_task("timing", total=len(plan))
    for config in plan:
        label = "unpruned" if config is None else f"{method_name(config)} {budget_label(config)}"
        progress.update(task, description=f"timing {label}")
        runs.append(measure(model, inputs, config, repeats=repeats, max_new_tokens=max_new_tokens))
        progress.advance(task)
    return runs


def budget_label(config: MethodConfig) -> str:
    return f"ratio {config.ratio:g}" if config.ratio is not None else f"{config.tokens} tokens"


def table(runs: list[Run]) -> Table:
    base = runs[0]
    # Two-line headers and no vertical rules keep the table inside an 80-column terminal, unwrapped.
    result = Table(
        title="visual token pruning: unpruned vs pruned", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    result.add_column("method", no_wrap=True)
    for name in ("ratio", "visual\ntokens", "kept\n/image", "prefill\nms", "generate\nms"):
        result.add_column(name, justify="right", no_wrap=True)
    for name in ("prefill\nspeed-up", "generate\nspeed-up"):
        result.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        kept = run.kept_per_image[:1] if len(set(run.kept_per_image)) == 1 else run.kept_per_image
        result.add_row(
            "unpruned" if run.config is None else method_name(run.config),
            "0" if run.config is None else f"{run.config.ratio:g}" if run.config.ratio is not None else "-",
            str(run.visual_tokens),
            ", ".join(map(str, kept)),
            f"{run.prefill_ms:.1f}",
            f"{run.generate_ms:.1f}",
            f"{base.prefill_ms / run.prefill_ms:.2f}x",
            f"{base.generate_ms / run.generate_ms:.2f}x",
        )
    return result
