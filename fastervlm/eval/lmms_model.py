"""`--model fastervlm` for lmms-eval: any model fastervlm supports, pruned by any method, batched.

    lmms-eval eval --model fastervlm \
        --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=fastervlm,ratio=0.9 --tasks pope --batch_size 8

Model args: `pretrained` (hub id or local folder), `method` ("none" for the unpruned model, or a fastervlm
method), `ratio` or `tokens` (as in `fastervlm.prune`: not both; neither gives the method's default), any method
or model-family option by name (e.g. `layer=2` for fastv, `mode=paper` for LLaVA-NeXT), and the loading knobs
`device`, `dtype`, `device_map`, `attn_implementation`, `batch_size`, `max_frames_num`, and `image_aspect_ratio`:
`stock` (default: the processor's own preprocessing, a centre crop for LLaVA-1.5) or `pad` (the reference
LLaVA evaluation's expand2square: pad to a square with the mean colour first). Data parallel runs under
`accelerate launch` / `torchrun`; `device_map=auto` splits a model too large for one device.

Failures raise: a generation error, a video that cannot be read, or a pruned run that did not prune stops the
evaluation instead of scoring an empty answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor

import fastervlm
from fastervlm.eval.results import UNPRUNED
from fastervlm.eval.video import load_frames
from fastervlm.models import ADAPTERS, adapter_class, adapter_for

NATIVE_PAD = ("LlavaImageProcessor", "LlavaImageProcessorPil")
ASPECTS = ("stock", "pad")  # image_aspect_ratio: the processor's own preprocessing, or pad to square first
DTYPES = {"auto": "auto", "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def model_class_for(pretrained: str) -> type[torch.nn.Module]:
    """The transformers class of a checkpoint, among the classes fastervlm has adapters for."""
    config = AutoConfig.from_pretrained(pretrained)
    classes = [getattr(transformers, name) for adapter in ADAPTERS for name in adapter.model_classes]
    for cls in classes:
        if cls.config_class.model_type == config.model_type:
            return cls
    supported = ", ".join(sorted(cls.config_class.model_type for cls in classes))
    raise ValueError(f"pretrained={pretrained!r} is a {config.model_type!r} model; fastervlm supports: {supported}")


@dataclass
class TokenTally:
    """Visual tokens before and after pruning, summed over every sample the model saw."""

    samples: int = 0
    total: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, float]:
        n = max(self.samples, 1)
        return {"samples": self.samples, "total_mean": self.total / n, "kept_mean": self.kept / n}


class FasterVLMLmms(lmms):
    """lmms-eval model: a stock transformers VLM with `fastervlm.prune` applied."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        method: str = UNPRUNED,
        ratio: float | None = None,
        tokens: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        device_map: str | None = None,
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        max_frames_num: int = 8,
        image_aspect_ratio: str = "stock",
        **options: Any,
    ) -> None:
        super().__init__()
        if image_aspect_ratio not in ASPECTS:
            raise ValueError(f"image_aspect_ratio={image_aspect_ratio!r} is not one of: {', '.join(ASPECTS)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of: {', '.join(DTYPES)}")
        if device_map not in (None, "", "auto"):
            raise ValueError(f"device_map={device_map!r}: use 'auto' (split over the visible devices) or leave it out")
        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        if device_map == "auto":
            if self._world_size > 1:
                raise ValueError("device_map=auto splits one model over all devices; it cannot run data parallel")
            load_device = None
        elif self._world_size > 1:
            load_device = str(self.accelerator.device)
        else:
            load_device = device or ("cuda" if torch.cuda.is_available() else "cpu")

        cls = model_class_for(pretrained)
        model = cls.from_pretrained(
            pretrained,
            dtype=DTYPES[dtype],
            attn_implementation=attn_implementation,
            device_map="auto" if device_map == "auto" else None,
        )
        self._model = (model if load_device is None else model.to(load_device)).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        # generate() appends after the last column, so batched prompts are padded on the left.
        self.processor.tokenizer.padding_side = "left"
        if self.processor.chat_template is None:
            raise ValueError(
                f"pretrained={pretrained!r} has no chat template; the prompts need one (llava-hf checkpoints ship it)"
            )
        family = adapter_class(self._model)
        # The family's options (LLaVA-NeXT's mode / newline, Video-LLaVA's mode) hold for every cell, whatever the
        # method: they decide the layout, and with it the processor that builds the inputs.
        self.family_options = {k: options.pop(k) for k in list(options) if k in family.options}
        adapter_for(self._model, **self.family_options)  # checks the values, naming the allowed ones
        self.processor = family.input_processor(self.processor, **self.family_options)
        self.pretrained = pretrained
        self.batch_size_per_gpu = int(batch_size)
        self.max_frames_num = int(max_frames_num)
        self.image_aspect_ratio = image_aspect_ratio
        self.tally = TokenTally()
        self.show_progress = True  # the grid runner turns it off: its own bar counts cells
        self.set_pruning(method, ratio=ratio, tokens=tokens, **options)

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._model.device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def clean(self) -> None:
        """lmms-eval calls this after each evaluation and its default deletes the model; the grid runner evaluates
        many cells on one load, so only cached memory is released."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def set_pruning(
        self, method: str = UNPRUNED, ratio: float | None = None, tokens: int | None = None, **options: Any
    ) -> None:
        """Reconfigure in place, so a grid runner loads the weights once for every method and ratio.

        With family options (LLaVA-NeXT's mode="paper", say) the unpruned cell is the family's layout with every
        token kept: fastervlm at ratio 0, which removes nothing (the stock model would not take paper inputs).
        """
        if getattr(self, "pruned", False):
            fastervlm.unprune(self._model)
        self.method, self.pruned = UNPRUNED, False
        self.tally = TokenTally()
        if method == UNPRUNED:
            if ratio not in (None, 0, 0.0) or tokens is not None or options:
                raise ValueError(f"method={UNPRUNED!r} is the unpruned model; it takes no ratio, tokens or options")
            if self.family_options:
                fastervlm.prune(self._model, method="fastervlm", ratio=0.0, **self.family_options)
                self.pruned = True
            return
        fastervlm.prune(self._model, method=method, ratio=ratio, tokens=tokens, **options, **self.family_options)
        self.method, self.pruned = method, True

    def _messages(self, context: str, visuals: Sequence[Any]) -> str:
        kinds = ["video" if isinstance(v, list) else "image" for v in visuals]
        content = [{"type": kind} for kind in kinds] + [{"type": "text", "text": context}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )

    def _visuals(self, raw: Sequence[Any]) -> list[Any]:
        """Images stay PIL images; a video (a path, lmms-eval's convention) becomes its list of sampled frames."""
        out = []
        for item in raw:
            if isinstance(item, Image.Image):
                image = item.convert("RGB")
                out.append(self._pad(image) if self.image_aspect_ratio == "pad" and not self._native_pad else image)
            elif isinstance(item, str):
                out.append(load_frames(item, self.max_frames_num))
            else:
                raise TypeError(f"a task gave a visual of type {type(item).__name__}; expected a PIL image or a path")
        return out

    @property
    def _native_pad(self) -> bool:
        """LlavaImageProcessor's own do_pad is expand2square (mean colour, centred): used where the processor has it."""
        return type(self.processor.image_processor).__name__ in NATIVE_PAD

    def _pad(self, image: Image.Image) -> Image.Image:
        """The reference's expand2square: the image centred on a square of the processor's mean colour.

        For image processors without that option: CLIPImageProcessor (llava-hf's LLaVA-1.5 checkpoints) has no
        padding, and LLaVA-NeXT's `do_pad` pads crops for batching, not the image to a square.
        """
        width, height = image.size
        if width == height:
            return image
        mean = self.processor.image_processor.image_mean
        side = max(width, height)
        square = Image.new("RGB", (side, side), tuple(int(255 * m) for m in mean))
        square.paste(image, ((side - width) // 2, (side - height) // 2))
        return square

    def _inputs(self, prompts: list[str], visuals: list[list[Any]]) -> dict[str, torch.Tensor]:
        flat = [v for per_doc in visuals for v in per_doc]
        images = [v for v in flat if not isinstance(v, list)]
        videos = [v for v in flat if isinstance(v, list)]
        media = {}
        if images:
            media["images"] = images
        if videos:
            media["videos"] = videos
        if images and self.image_aspect_ratio == "pad" and self._native_pad:
            media["do_pad"] = True
        inputs = self.processor(text=prompts, padding=True, return_tensors="pt", **media)
        return inputs.to(self.device, dtype=self._model.dtype) if media else inputs.to(self.device)

    def _count(self, inputs: dict[str, torch.Tensor]) -> None:
        """Tally the visual tokens the language model really got; a pruned batch that was not pruned raises."""
        config = self._model.config
        token_ids = (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
        placeholders = sum(int((inputs["input_ids"] == i).sum()) for i in token_ids if i is not None)
        self.tally.samples += inputs["input_ids"].shape[0]
        self.tally.total += placeholders
        if not self.pruned or placeholders == 0:
            self.tally.kept += placeholders
            return
        report = fastervlm.last_report(self._model)
        if report is None or not report.applied:
            note = "no report" if report is None else report.note
            raise RuntimeError(
                f"method={self.method!r} did not prune a batch with {placeholders} visual tokens: {note}"
            )
        self.tally.kept += report.visual_tokens_out

    def _batches(self, requests: list[Instance], key: Callable[[tuple], Any]) -> list[list[tuple[int, tuple]]]:
        """Requests grouped by `key` (same generation settings, same task), cut into batches."""
        groups: dict[Any, list[tuple[int, tuple]]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(key(request.args), []).append((index, request.args))
        size = self.batch_size_per_gpu
        return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]

    def _doc_visuals(self, args: tuple) -> list[Any]:
        doc_to_visual, doc_id, task, split = args[2:6]
        doc = self.task_dict[task][split][doc_id]
        return self._visuals(doc_to_visual(doc) or [])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        batches = self._batches(requests, key=lambda args: (args[4], repr(sorted(args[1].items()))))
        for batch in tqdm(batches, desc="fastervlm generate", disable=self.rank != 0 or not self.show_progress):
            gen_kwargs = dict(batch[0][1][1])
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            visuals = [self._doc_visuals(args) for _, args in batch]
            prompts = [self._messages(args[0], v) for (_, args), v in zip(batch, visuals, strict=True)]
            inputs = self._inputs(prompts, visuals)
            temperature = float(gen_kwargs.pop("temperature", 0) or 0)
            do_sample = bool(gen_kwargs.pop("do_sample", False)) or temperature > 0
            generate_kwargs = {
                "max_new_tokens": int(gen_kwargs.pop("max_new_tokens", 1024)),
                "num_beams": int(gen_kwargs.pop("num_beams", 1)),
                "do_sample": do_sample,
                "pad_token_id": self.processor.tokenizer.pad_token_id,
            }
            if do_sample:
                generate_kwargs["temperature"] = temperature
                if gen_kwargs.get("top_p") is not None:
                    generate_kwargs["top_p"] = float(gen_kwargs["top_p"])
            with torch.inference_mode():
                out = self._model.generate(**inputs, **generate_kwargs)
            self._count(inputs)
            new = out[:, inputs["input_ids"].shape[1] :]
            for (index, _), text in zip(batch, self.processor.batch_decode(new, skip_special_tokens=True), strict=True):
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                results[index] = text.strip()
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Per request (negative log-likelihood of the continuation, whether greedy decoding gives it).

        lmms-eval picks the multiple-choice answer by argmin, so the first value is the summed NLL (lower is
        likelier), i.e. acc = argmax of the log-likelihood as in lm-eval. The pair is wrapped in GenerationResult:
        lmms-eval 0.7.3 turns a bare tuple into its string.
        """
        results: list[GenerationResult | None] = [None] * len(requests)
        batches = self._batches(requests, key=lambda args: args[4])
        tokenizer = self.processor.tokenizer
        for batch in tqdm(batches, desc="fastervlm loglikelihood", disable=self.rank != 0 or not self.show_progress):
            visuals = [self._doc_visuals(args) for _, args in batch]
            contexts = [self._messages(args[0], v) for (_, args), v in zip(batch, visuals, strict=True)]
            continuations = [self._continuation(args) for _, args in batch]
            lengths = [
                len(tokenizer(c + t, add_special_tokens=False).input_ids)
                - len(tokenizer(c, add_special_tokens=False).input_ids)
                for c, t in zip(contexts, continuations, strict=True)
            ]
            inputs = self._inputs([c + t for c, t in zip(contexts, continuations, strict=True)], visuals)
            with torch.inference_mode():
                # Every row ends at the last column (left padding), so the continuations' scores are among the
                # last max(lengths) + 1 positions: the LM head runs on those only.
                logits = self._model(**inputs, logits_to_keep=max(lengths) + 1).logits.float()
            self._count(inputs)
            ids = inputs["input_ids"]
            for row, ((index, _), n) in enumerate(zip(batch, lengths, strict=True)):
                # Left padding: every row ends at the last column; pruning removes only earlier (visual) tokens.
                target = ids[row, -n:]
                scores = torch.log_softmax(logits[row, -n - 1 : -1], dim=-1)
                nll = -scores.gather(-1, target[:, None]).sum().item()
                greedy = bool((scores.argmax(-1) == target).all())
                results[index] = GenerationResult(text=(nll, greedy))
        return results

    def _continuation(self, args: tuple) -> str:
        target, doc_id, task, split = args[1], args[3], args[4], args[5]
        return target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("fastervlm's lmms-eval model answers single-round tasks only")
