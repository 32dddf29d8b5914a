"""Sequence shortening: drop columns per sample, insert method-made tokens, re-pad, and translate for decode.

The pruned model is the stock model run on a shorter sequence: kept tokens get the positions the
caller's convention gives them in that shorter sequence (contiguous, as in the reference), or, for models whose
position ids carry geometry (M-RoPE), the ids the stock model gives them in the full sequence. Every later
decode step is translated from the caller's full-length view (generate keeps the caller's input_ids and
attention mask) to the compact one that the KV cache holds. In-LLM methods shorten in stages, each stage
compacting the previous one's sequence; `prefill_len` and `removed` always refer to the caller's prefill,
so any stage translates a decode step straight from the caller's mask and positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compaction:
    """A per-sample column selection over a (batch, L) sequence, with optional new tokens, re-padded to (batch, L').

    index: (batch, L') source column of each compact slot; a made (inserted) slot holds its anchor column, the
    column it follows. made: (batch, L') rank of the made token in its sample's run, -1 for source slots.
    valid marks slots that hold a source column or a made token (the rest is padding added because samples
    changed length by different amounts).
    """

    keep: torch.Tensor  # (batch, L) bool
    index: torch.Tensor  # (batch, L') long
    made: torch.Tensor  # (batch, L') long
    valid: torch.Tensor  # (batch, L') bool
    removed: torch.Tensor  # (batch,) long, net columns removed since the caller's prefill (dropped - made)
    prefill_len: int  # the caller's prefill length
    mask: torch.Tensor  # (batch, L') long, compact attention mask
    anchor: torch.Tensor  # (batch,) long, the column each sample's made tokens follow
    shift: torch.Tensor  # (batch, L + R) contiguous-position shift of each source column, then of each made token

    @classmethod
    def build(
        cls,
        keep: torch.Tensor,
        attention_mask: torch.Tensor | None,
        made: torch.Tensor | None = None,
        anchor: torch.Tensor | None = None,
        base: Compaction | None = None,
    ) -> Compaction:
        """Keep the selected columns in order; pad on the side the caller padded (left unless right-padded).

        made[b] new tokens go right after column anchor[b] (kept or not), before every later kept column.
        base: the compaction that produced this sequence, if any (an earlier stage). The padding it added is
        dropped here without counting as removed tokens, so a later stage's width follows its longest sample
        rather than carrying every earlier stage's padding along.
        """
        batch, length = keep.shape
        device = keep.device
        filler = torch.zeros_like(keep) if base is None else ~base.valid.to(device)
        keep = keep & ~filler
        real = torch.ones_like(keep) if attention_mask is None else attention_mask.bool()
        made = torch.zeros(batch, dtype=torch.long, device=device) if made is None else made.to(device)
        anchor = torch.zeros(batch, dtype=torch.long, device=device) if anchor is None else anchor.to(device)
        runs = int(made.max()) if batch else 0
        columns = torch.arange(length, device=device).expand(batch, length)
        ranks = torch.arange(runs, device=device).expand(batch, runs)
        # Source column c sorts at 2c, the made run at 2 * anchor + 1; a stable sort keeps the run in order.
        present = torch.cat([keep, ranks < made.unsqueeze(1)], dim=1)
        key = torch.cat([2 * columns, (2 * anchor + 1).unsqueeze(1).expand(batch, runs)], dim=1)
        order = torch.where(present, key, 2 * length + 2).sort(dim=1, stable=True).indices
        right_padded = bool((~real[:, -1]).any())
        lengths = present.sum(dim=1)
        width = int(lengths.max()) if batch else 0
        slot = torch.arange(width, device=device).expand(batch, width)
        pad = (width - lengths).unsqueeze(1)
        valid = slot < lengths.unsqueeze(1) if right_padded else slot >= pad
        rank = slot if right_padded else slot - pad  # k-th present entry of the sample
        entry = order.gather(1, rank.clamp(0, max(length + runs - 1, 0)))
        is_made = valid & (entry >= length)
        index = torch.where(is_made, anchor.unsqueeze(1).expand_as(entry), torch.where(valid, entry, 0))
        made_rank = torch.where(is_made, entry - length, -1)
        mask = ((real.gather(1, index) | is_made) & valid).long()
        dropped = (~keep & ~filler).long()
        after_run = made.unsqueeze(1) * (columns > anchor.unsqueeze(1))
        source_shift = after_run - (dropped.cumsum(dim=1) - dropped)
        anchor_shift = source_shift.gather(1, anchor.unsqueeze(1)) - dropped.gather(1, anchor.unsqueeze(1))
        shift = torch.cat([source_shift, anchor_shift + 1 + ranks], dim=1)
        net = dropped.sum(dim=1) - made
        prefill_len = length if base is None else base.prefill_len
        removed = net if base is None else base.removed.to(device) + net
        return cls(keep, index, made_rank, valid, removed, prefill_len, mask, anchor, shift)

    @property
    def identity(self) -> bool:
        return bool(self.keep.all()) and not bool((self.made >= 0).any())

    @property
    def made_slots(self) -> torch.Tensor:
        return self.made >= 0

    def gather(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        """Compact a (batch, L, ...) tensor; made slots and padding added by the compaction get `fill`."""
        index = self.index.view(*self.index.shape, *([1] * (values.dim() - 2))).expand(
            *self.index.shape, *values.shape[2:]
        )
        out = values.gather(1, index)
        source = (self.valid & ~self.made_slots).view(*self.valid.shape, *([1] * (values.dim() - 2)))
        return torch.where(source, out, torch.full_like(out, fill))

    def place(self, compact: torch.Tensor, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Write each sample's made tokens (r_b, dim) into its made slots of a compacted (batch, L', dim) tensor."""
        if not bool(self.made_slots.any()):
            return compact
        out = compact.clone()
        for b, made in enumerate(tokens):
            slots = self.made_slots[b].nonzero().squeeze(1)
            out[b, slots] = made[self.made[b, slots]].to(out.dtype)
        return out

    def positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Contiguous positions: each kept column moves down by the columns dropped before it and up by the
        tokens made before it; made tokens continue from the last kept column at or before their anchor."""
        batch, length = position_ids.shape
        anchor_position = position_ids.gather(1, self.anchor.unsqueeze(1).to(position_ids.device))
        runs = self.shift.shape[1] - length
        extended = torch.cat([position_ids, anchor_position.expand(batch, runs)], dim=1) + self.shift
        entry = torch.where(self.made_slots, self.made + length, self.index)
        return torch.where(self.valid, extended.gather(1, entry), 0)

    def kept_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Original positions: each kept column keeps its own id; (..., batch, L) -> (..., batch, L').

        For models whose position ids carry geometry (M-RoPE's (t, h, w) rows), which renumbering would destroy.
        Made tokens have no original place; a plan with any is refused here.
        """
        if bool(self.made_slots.any()):
            raise ValueError("tokens a method made have no original position; use a selection method on this model")
        index = self.index.to(position_ids.device).expand(*position_ids.shape[:-2], *self.index.shape)
        return torch.where(self.valid.to(position_ids.device), position_ids.gather(-1, index), 0)

    def decode_mask(self, attention_mask: torch.Tensor | None, new_tokens: int) -> torch.Tensor:
        """The compact mask for a step whose caller-side mask is (batch, prefill_len + t)."""
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


def gather_through(plans: Sequence[Compaction], values: torch.Tensor, fill: int) -> torch.Tensor:
    """Follow a (batch, L, ...) tensor of the caller's prefill through successive compactions."""
    for plan in plans:
        values = plan.gather(values.to(plan.index.device), fill)
    return values
