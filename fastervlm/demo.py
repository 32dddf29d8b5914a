"""Loading a LLaVA-family model, asking it questions, and timing it unpruned against pruned: what the CLI runs."""

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
    AutoConfig,
    AutoProcessor,
    BatchFeature,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
    VideoLlavaForConditionalGeneration,
)

import fastervlm
from fastervlm.methods import MethodConfig, method_entry, method_name
from fastervlm.models import adapter_for
from fastervlm.report import Report
from fastervlm.tiny import (
    synthetic_images,
    synthetic_video,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_next_processor,
    tiny_processor,
    tiny_video_llava,
    tiny_video_llava_processor,
)
from fastervlm.tiny.llava_onevision import tiny_llava_onevision, tiny_llava_onevision_processor
from fastervlm.tiny.qwen2_vl import (
    IMAGE_PROMPT,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
    tiny_qwen2_vl_processor,
    tiny_qwen3_vl,
    tiny_qwen3_vl_processor,
)
from fastervlm.viz.kept import cut_layers
from fastervlm.viz.kept import panel_title as kept_title

TINY = "tiny"  # --model value (and the default) naming the embedded random model
DEFAULT_ARCH = "llava-1.5"  # the tiny model's family unless --arch names another
TINY_TEXT_LAYERS = 17  # every in-LLM method prunes in it: SparseVLM shortens after layer 15, for layer 16
PLACEHOLDERS = {"images": "<image>", "videos": "<video>"}  # processor keyword -> its placeholder in the prompt


def same_view(image: Image.Image, size: int) -> Image.Image:
    """LLaVA-1.5's only view (and Video-LLaVA's frame) is the centre crop, which the overlay itself cuts."""
    return image


def squashed_view(image: Image.Image, size: int) -> Image.Image:
    """LLaVA-NeXT's base view: the whole image resized to size x size, aspect ratio not kept (bicubic, as its
    image processor does); the overlay's crop then leaves it as is."""
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def llava_prompt(question: str, placeholder: str = "<image>") -> str:
    """LLaVA-1.5's (and Video-LLaVA's) conversation template; a prompt that already holds the placeholder is
    taken as the caller's own."""
    return question if placeholder in question else f"USER: {placeholder}\n{question} ASSISTANT:"


def chatml_prompt(question: str, placeholder: str) -> str:
    """The ChatML turn Qwen2-VL, Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision's chat templates write for one image."""
    if placeholder in question:
        return question
    return f"<|im_start|>user\n{placeholder}{question}<|im_end|>\n<|im_start|>assistant\n"


def qwen_prompt(question: str, placeholder: str = "<image>") -> str:
    return chatml_prompt(question, IMAGE_PROMPT)


def onevision_prompt(question: str, placeholder: str = "<image>") -> str:
    return chatml_prompt(question, "<image>\n")


def fixed_view(model: nn.Module, processor: ProcessorMixin, inputs: BatchFeature) -> tuple[tuple[int, int], int]:
    """(patch grid, pixel side) of the first view: the family's fixed grid on the processor's crop."""
    image_processor = processor.image_processor
    size = image_processor.crop_size or image_processor.size
    return adapter_for(model).patch_grid(model), size["height"]


def merged_view(model: nn.Module, processor: ProcessorMixin, inputs: BatchFeature) -> tuple[tuple[int, int], int]:
    """Qwen-VL's first image: its merged-token grid (rows, cols) from image_grid_thw, drawn on a 336 px square."""
    merge = model.config.vision_config.spatial_merge_size
    _, height, width = inputs["image_grid_thw"][0].tolist()
    return (height // merge, width // merge), 336


@dataclass(frozen=True)
class Arch:
    """A model family the demo runs: its class, its embedded tiny stand-in, and what it is shown by default."""

    model_class: type[PreTrainedModel]
    tiny: Callable[..., nn.Module]
    tiny_processor: Callable[[], ProcessorMixin]
    media: str  # the processor keyword of its synthetic samples: "images" or "videos"
    synthetic: Callable[[int], list[Any]]  # n synthetic samples: images, or videos as lists of frames
    geometry: str  # the tiny model's shapes, for the random-weights note
    example: str  # a hub id with real weights
    first_view: Callable[[Image.Image, int], Image.Image] = same_view  # the image as the report's first view saw it
    prompt: Callable[[str, str], str] = llava_prompt  # (question, placeholder) -> the prompt the model was tuned on
    view: Callable[[nn.Module, ProcessorMixin, BatchFeature], tuple[tuple[int, int], int]] = fixed_view


ARCHS = {
    "llava-1.5": Arch(
        LlavaForConditionalGeneration,
        tiny_llava,
        tiny_processor,
        "images",
        synthetic_images,
        "LLaVA-1.5-shaped, real 336 px / 14 px geometry, 576 visual tokens per image",
        "llava-hf/llava-1.5-7b-hf",
    ),
    "llava-next": Arch(
        LlavaNextForConditionalGeneration,
        tiny_llava_next,
        tiny_llava_next_processor,
        "images",
        synthetic_images,
        "LLaVA-NeXT-shaped, real 336 px / 14 px geometry and anyres grid: a base view plus 2-4 crops, up to 2,928 "
        "visual tokens per image",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        squashed_view,
    ),
    "video-llava": Arch(
        VideoLlavaForConditionalGeneration,
        tiny_video_llava,
        tiny_video_llava_processor,
        "videos",
        lambda n: [synthetic_video(seed=i) for i in range(n)],
        "Video-LLaVA-shaped, real 224 px / 14 px geometry, 8 frames x 257 visual tokens per video",
        "LanguageBind/Video-LLaVA-7B-hf",
    ),
    "llava-onevision": Arch(
        LlavaOnevisionForConditionalGeneration,
        tiny_llava_onevision,
        tiny_llava_onevision_processor,
        "images",
        synthetic_images,
        "LLaVA-OneVision-shaped at small scale: SigLIP (no [CLS]) on 84 px views of 14 px patches, anyres up to "
        "3 x 3 crops with unpadding and newlines",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        squashed_view,
        onevision_prompt,
    ),
    **{
        name: Arch(
            model_class,
            tiny,
            processor,
            "images",
            synthetic_images,
            f"{label}-shaped, real {patch} px patches and 2 x 2 merger, small pixel budget: a few dozen visual tokens "
            "per image, as many as its size gives",
            example,
            squashed_view,
            qwen_prompt,
            merged_view,
        )
        for name, model_class, tiny, processor, label, patch, example in (
            (
                "qwen2-vl",
                Qwen2VLForConditionalGeneration,
                tiny_qwen2_vl,
                tiny_qwen2_vl_processor,
                "Qwen2-VL",
                14,
                "Qwen/Qwen2-VL-7B-Instruct",
            ),
            (
                "qwen2.5-vl",
                Qwen2_5_VLForConditionalGeneration,
                tiny_qwen2_5_vl,
                tiny_qwen2_vl_processor,
                "Qwen2.5-VL",
                14,
                "Qwen/Qwen2.5-VL-7B-Instruct",
            ),
            (
                "qwen3-vl",
                Qwen3VLForConditionalGeneration,
                tiny_qwen3_vl,
                tiny_qwen3_vl_processor,
                "Qwen3-VL",
                16,
                "Qwen/Qwen3-VL-8B-Instruct",
            ),
        )
    },
}


def resolve_arch(model: str | None, arch: str | None) -> str:
    """The model family: read from a checkpoint's config (`arch`, if given, must agree); llava-1.5 for the tiny model.

    A LLaVA-NeXT checkpoint loaded as LLaVA-1.5 (or the reverse) fails deep inside the model with a message that
    names neither; the config's model_type says which it is.
    """
    if model is None or model == TINY:
        return arch or DEFAULT_ARCH
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir():
        # Otherwise the hub client rejects it as a malformed repo id, which hides the real problem.
        raise FileNotFoundError(f"--model {model!r} looks like a path, but no such directory exists")
    model_type = AutoConfig.from_pretrained(model).model_type
    found = {family.model_class.config_class.model_type: name for name, family in ARCHS.items()}
    if model_type not in found:
        raise ValueError(
            f"--model {model!r} is a {model_type!r} checkpoint; --arch supports {', '.join(sorted(found))} "
            f"({', '.join(f'{t} -> {n}' for t, n in sorted(found.items()))})"
        )
    if arch is not None and arch != found[model_type]:
        raise ValueError(
            f"--arch {arch} does not match --model {model!r}, a {model_type!r} checkpoint ({found[model_type]}); "
            "leave --arch out to use the checkpoint's own family"
        )
    return found[model_type]


def load_llava(
    model: str | None, *, arch: str | None = None, attn: str = "sdpa", device: str = "cpu"
) -> tuple[nn.Module, ProcessorMixin]:
    """A LLaVA-family model and its processor, ready for batched generation.

    model: a hub id or a local `save_pretrained` directory; None or "tiny" gives the arch's embedded tiny model
    with random weights (the real geometry, nothing downloaded). arch: the family, read from the checkpoint's
    config when left out (and checked against it when given).
    """
    family = ARCHS[resolve_arch(model, arch)]
    if model is None or model == TINY:
        llava, processor = family.tiny(attn_implementation=attn, text_layers=TINY_TEXT_LAYERS), family.tiny_processor()
    else:
        processor = AutoProcessor.from_pretrained(model)
        # dtype="auto": the checkpoint's own dtype (fp16 for llava-hf); transformers 5 renamed torch_dtype.
        llava = family.model_class.from_pretrained(model, dtype="auto", attn_implementation=attn)
    # generate() appends new tokens after the last column, so batched prompts must be padded on the left.
    processor.tokenizer.padding_side = "left"
    return llava.to(device).eval(), processor


def arch_of(model: nn.Module) -> Arch:
    for family in ARCHS.values():
        if type(model) is family.model_class:
            return family
    raise TypeError(f"{type(model).__name__} is not a demo family; families: {', '.join(ARCHS)}")


def batch(
    model: nn.Module, processor: ProcessorMixin, samples: list[Any], question: str, media: str = "images"
) -> BatchFeature:
    """One prompt per image (or video), padded into one batch, on the model's device and (for pixels) its dtype."""
    text = [arch_of(model).prompt(question, PLACEHOLDERS[media])] * len(samples)
    inputs = processor(**{media: samples}, text=text, padding=True, return_tensors="pt")
    return inputs.to(device=model.device, dtype=model.dtype)


def answers(model: nn.Module, processor: ProcessorMixin, inputs: BatchFeature, max_new_tokens: int) -> list[str]:
    """Greedy answers, prompt stripped."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]


def visual_tokens_per_sample(model: nn.Module, inputs: BatchFeature) -> list[int]:
    """Image and video placeholder tokens of each sample: what the unpruned model feeds its LLM."""
    ids = inputs["input_ids"]
    return sum((ids == m.token_id).sum(dim=1) for m in adapter_for(model).modalities(model)).tolist()


def visual_tokens(model: nn.Module, inputs: BatchFeature) -> int:
    return sum(visual_tokens_per_sample(model, inputs))


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
    """One row of the demo table; config None is the unpruned model.

    Visual tokens are counted per sample at two places: entering the first LLM layer and entering the last.
    They differ for methods that prune inside the LLM (FastV, SparseVLM): every token enters layer 0.
    """

    config: MethodConfig | None
    first_layer: list[int]  # visual tokens per sample entering LLM layer 0
    last_layer: list[int]  # ... entering the last LLM layer (merged tokens included)
    cut_before: list[int] | None  # LLM layers whose input got shorter (0-based); [] before the LLM; None unpruned
    prefill_ms: float
    generate_ms: float
    first_kept: torch.Tensor | None  # first sample's first view (image or frame): kept patch indices, raster order
    first_merged: int = 0  # tokens the method made from patches (merged, pooled, recycled) in the first sample
    first_views: int = 1  # views of the first sample (LLaVA-NeXT: base + crops); first_kept is its first view's


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
    per_sample = visual_tokens_per_sample(model, inputs)
    visual_in = sum(per_sample)

    def prefill() -> None:
        model(**inputs, logits_to_keep=1)  # what generate's prefill computes: the last position's logits

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
    text = (inputs["attention_mask"].sum(dim=1) - torch.tensor(per_sample)).tolist()
    if report is None:
        return Run(None, per_sample, per_sample, None, prefill_ms, generate_ms, None)
    # Visual tokens that reached each layer, per sample: kept patches plus any row the model always feeds (a
    # Video-LLaVA frame's [CLS] in stock mode, LLaVA-NeXT's newlines) plus tokens the method made.
    first = [length - t for length, t in zip(report.llm_input_lengths, text, strict=True)]
    last = [lengths[-1] - t for lengths, t in zip(report.seq_len_per_layer, text, strict=True)]
    merged = last[0] - report.kept_per_sample[0] if method_entry(method_name(config)).merges else 0
    views = len(report.kept_indices[0])
    return Run(
        config, first, last, cut_layers(report), prefill_ms, generate_ms, report.kept_indices[0][0], merged, views
    )


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


def cut_label(run: Run) -> str:
    """Where the sequence got shorter: before the LLM, or before which of its layers (0-based)."""
    if run.cut_before is None:
        return "-"
    if not run.cut_before:
        return "LLM" if method_entry(method_name(run.config)).stage == "vision" else "nothing"
    return f"layer{'s' if len(run.cut_before) > 1 else ''} {','.join(map(str, run.cut_before))}"


def panel_title(run: Run) -> str:
    """The PNG panel's title for the first view (see fastervlm.viz.kept.panel_title)."""
    last_cut = run.cut_before[-1] if run.cut_before else None
    return kept_title(budget_label(run.config), len(run.first_kept), run.first_merged, last_cut, run.first_views)


def per_sample(counts: list[int]) -> str:
    return ", ".join(map(str, counts[:1] if len(set(counts)) == 1 else counts))


def table(runs: list[Run]) -> Table:
    base = runs[0]
    # Two-line headers and no vertical rules keep the table inside an 80-column terminal, unwrapped.
    result = Table(
        title="visual token pruning: unpruned vs pruned",
        caption="visual tokens per sample entering LLM layer 0 and the last layer (merged tokens included); "
        "cut before: where the sequence first gets shorter (the LLM's input, or before layer k, 0-based)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    result.add_column("method", no_wrap=True)
    for name in ("ratio", "cut\nbefore", "visual\nlayer 0", "visual\nlast", "prefill\nms", "generate\nms"):
        result.add_column(name, justify="right", no_wrap=True)
    for name in ("prefill\nspeed-up", "generate\nspeed-up"):
        result.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        result.add_row(
            "unpruned" if run.config is None else method_name(run.config),
            "0" if run.config is None else f"{run.config.ratio:g}" if run.config.ratio is not None else "-",
            cut_label(run),
            per_sample(run.first_layer),
            per_sample(run.last_layer),
            f"{run.prefill_ms:.1f}",
            f"{run.generate_ms:.1f}",
            f"{base.prefill_ms / run.prefill_ms:.2f}x",
            f"{base.generate_ms / run.generate_ms:.2f}x",
        )
    return result
