"""What the last forward really did: the user's proof that pruning happened (or why it did not)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(repr=False)
class Report:
    """One prefill's pruning, per sample and per view.

    kept_indices[b][v]: ascending patch indices (raster order) kept from view v (image, crop or frame) of
    sample b; for methods that prune inside the LLM, the ones that reach its last layer.
    visual_tokens_in / _out: visual tokens over the batch before pruning and entering the LLM (its last layer,
    for in-LLM methods). llm_input_lengths[b]: real (unpadded) tokens of sample b entering the language model.
    seq_len_per_layer[b][l]: real tokens of sample b entering decoder layer l during prefill.
    merged_tokens: tokens a merging method (VisionZip, pool, SparseVLM's recycling) made, counted in
    visual_tokens_out too.
    applied: False when the method did not run on this batch, with the reason in `note`.
    score: the patch score that ran, for methods with a choice ("cls" or the "received" proxy; see FasterVLMConfig).
    """

    method: str
    kept_indices: list[list[torch.Tensor]] = field(default_factory=list)
    visual_tokens_in: int = 0
    visual_tokens_out: int = 0
    llm_input_lengths: list[int] = field(default_factory=list)
    seq_len_per_layer: list[list[int]] = field(default_factory=list)
    merged_tokens: int = 0
    applied: bool = False
    note: str = ""
    score: str = ""

    @property
    def kept_per_sample(self) -> list[int]:
        return [sum(len(v) for v in views) for views in self.kept_indices]

    def __repr__(self) -> str:
        views = [[len(v) for v in sample] for sample in self.kept_indices]
        return (
            f"Report(method={self.method!r}, "
            + (f"score={self.score!r}, " if self.score else "")
            + f"applied={self.applied}, visual_tokens_in={self.visual_tokens_in}, "
            f"visual_tokens_out={self.visual_tokens_out}, kept_per_view={views}, "
            f"llm_input_lengths={self.llm_input_lengths}" + (f", note={self.note!r})" if self.note else ")")
        )
