"""The user's instruction for methods that prune by it before the LLM (CDPruner): text per view, from input_ids.

generate() encodes the images before any forward sees input_ids, so the prompt is kept from the outermost call
(generate or forward) while it runs, decoded with the language model's tokenizer, and handed to each view of
the sample it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.wrap import wrap


def load_tokenizer(name: str) -> Any:
    """The language model's tokenizer, by hub id or directory (only the installation's first prune loads it)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"tokenizer {name!r} could not be loaded to read the instruction ({error}); pass tokenizer=<hub id or "
            "directory of the model's tokenizer>"
        ) from error


def view_owners(items: list[tuple[int, int]], placeholders: list[int]) -> list[int]:
    """The sample each view belongs to: items (views, placeholder rows) fill the samples' placeholders in order."""
    owners, sample, filled = [], 0, 0
    for views, rows in items:
        while sample < len(placeholders) and placeholders[sample] - filled < rows:
            sample, filled = sample + 1, 0
        if sample == len(placeholders):
            raise ValueError(
                f"the prompt's placeholder counts {placeholders} do not fit the encoded items {items}; "
                "pass the input_ids the processor made for these images"
            )
        owners += [sample] * views
        filled += rows
    return owners


class InstructionSource:
    """Keeps the prompt of the running generate / forward call; gives each view its sample's instruction.

    A sample's instruction is its real text after its last visual placeholder, decoded without special tokens:
    the question, in LLaVA's prompts, followed by the chat template's answer cue. The prompt is per call
    (runtime/call.py): concurrent calls each read their own.
    """

    _prompt = CallLocal()  # (input_ids, attention_mask) of the running call

    def __init__(self, tokenizer: Any, visual_ids: list[int]) -> None:
        self.tokenizer, self.visual_ids = tokenizer, visual_ids

    def install(self, model: nn.Module) -> list[Callable[[], None]]:
        return [wrap(model, "generate", self._keep_prompt), wrap(model, "forward", self._keep_prompt)]

    def _keep_prompt(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        input_ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if self._prompt is not None or not isinstance(input_ids, torch.Tensor):  # an inner call: the outer one's
            return original(*args, **kwargs)
        self._prompt = (input_ids, kwargs.get("attention_mask"))
        try:
            return original(*args, **kwargs)
        finally:
            self._prompt = None

    def texts(self) -> list[str]:
        if self._prompt is None:
            raise ValueError(
                "this method reads the instruction from input_ids; call the pruned model's generate() or forward() "
                "with input_ids (not the encoder alone, not inputs_embeds)"
            )
        input_ids, mask = self._prompt
        out = []
        for b, ids in enumerate(input_ids):
            ids = ids[mask[b].bool()] if mask is not None else ids
            visual = torch.isin(ids, torch.tensor(self.visual_ids, device=ids.device)).nonzero()
            start = int(visual[-1]) + 1 if len(visual) else 0
            out.append(self.tokenizer.decode(ids[start:].tolist(), skip_special_tokens=True))
        return out

    def for_views(self, items: list[tuple[int, int]], token_id: int) -> list[str]:
        """Each view's instruction; items: the encode's (views, placeholder rows) per image or video, in order."""
        texts = self.texts()
        input_ids, mask = self._prompt
        real = input_ids if mask is None else input_ids.masked_fill(mask == 0, -1)
        placeholders = (real == token_id).sum(dim=1).tolist()
        return [texts[b] for b in view_owners(items, placeholders)]
