"""Sequence shortening: drop columns per sample, re-pad, and translate masks and positions for decode.

The pruned model is the stock model run on a shorter sequence: kept tokens get the positions the
caller's convention gives them in that shorter sequence (contiguous, as in the reference). Every later
decode step is translated from the caller's full-length view (generate keeps the caller's input_ids and
attention mask) to the compact one that the KV cache holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compaction:
    """A per-sample column selection over a (batch, L) prefill, re-padded to (batch, L').

    index: (batch, L') source column for each compact column; valid marks the ones that hold a real
    source column (the rest is padding added because samples lost different numbers of columns).
    """

    keep: torch.Tensor  # (batch, L) bool
    index: torch.Tensor  # (batch, L') long
    valid: torch.Tensor  # (batch, L') bool
    removed: torch.Tensor  # (batch,) long, columns dropped per sample
    prefill_len: int  # L
    mask: torch.Tensor  # (batch, L') long, compact attention mask

    @classmethod
    def build(cls, keep: torch.Tensor, attention_mask: torch.Tensor | None) -> Compaction:
        """Keep the selected columns in order; pad on the side the caller padded (left unless right-padded)."""
        batch, length = keep.shape
        real = torch.ones_like(keep) if attention_mask is None else attention_mask.bool()
        right_padded = bool((~real[:, -1]).any())
        lengths = keep.sum(dim=1)
        width = int(lengths.max()) if batch else 0
        slot = torch.arange(width, device=keep.device).expand(batch, width)
        pad = (width - lengths).unsqueeze(1)
        valid = slot < lengths.unsqueeze(1) if right_padded else slot >= pad
        rank = slot if right_padded else slot - pad  # k-th kept column of the sample
        order = torch.where(keep, torch.arange(length, device=keep.device), length).sort(dim=1).values
        index = order.gather(1, rank.clamp(0, max(length - 1, 0)))
        index = torch.where(valid, index, 0)
        mask = (real.gather(1, index) & valid).long()
        return cls(keep, index, valid, (~keep).sum(dim=1), length, mask)

    @property
    def identity(self) -> bool:
        return bool(self.keep.all())

    def gather(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        """Compact a (batch, L, ...) tensor; padding added by the compaction gets `fill`."""
        index = self.index.view(*self.index.shape, *([1] * (values.dim() - 2))).expand(
            *self.index.shape, *values.shape[2:]
        )
        out = values.gather(1, index)
        valid = self.valid.view(*self.valid.shape, *([1] * (values.dim() - 2)))
        return torch.where(valid, out, torch.full_like(out, fill))

    def positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Caller's prefill positions, each lowered by the columns dropped before it: contiguous again."""
        dropped = (~self.keep).long()
        shifted = position_ids - (dropped.cumsum(dim=1) - dropped)
        return self.gather(shifted, fill=0)

    def decode_mask(self, attention_mask: torch.Tensor | None, new_tokens: int) -> torch.Tensor:
        """The compact mask for a step whose caller-side mask is (batch, L + t)."""
        if attention_mask is None:
            tail = self.mask.new_ones(self.mask.shape[0], new_tokens)
            return torch.cat([self.mask, tail], dim=1)
        if attention_mask.shape[1] < self.prefill_len:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} tokens, fewer than the pruned prefill's "
                f"{self.prefill_len}: pass the full mask (prompt + generated tokens), as generate() does"
            )
        return torch.cat([self.mask.to(attention_mask.dtype), attention_mask[:, self.prefill_len :]], dim=1)

    def decode_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        return position_ids - self.removed.unsqueeze(1).to(position_ids.device)
