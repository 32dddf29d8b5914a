"""Kept-row selections travel with the features they describe, through generate's pre-encoding and expansion."""

from __future__ import annotations

from typing import Any

import torch

from fastervlm.models.base import SELECTION_ATTR, ImageSelection

Pooled = list[torch.Tensor] | torch.Tensor  # pooler_output: per-image tensors, or one tensor of views


def row_mask(selection: ImageSelection) -> torch.Tensor:
    mask = torch.zeros(selection.num_rows, dtype=torch.bool, device=selection.rows.device)
    mask[selection.rows] = True
    return mask


def attach_selections(output: Any, selections: list[ImageSelection]) -> None:
    """Hang each selection on its features, so it follows them through generate's pre-encoding and expansion.

    List entries keep their identity when generate repeats them for beams. A single tensor is re-stacked
    (transformers 5.23's `_expand_multimodal_outputs`), so its list also goes on the encoder output object,
    whose pooler_output generate replaces in place.
    """
    pooled = output.pooler_output
    if isinstance(pooled, torch.Tensor):
        setattr(pooled, SELECTION_ATTR, selections)
        setattr(output, SELECTION_ATTR, selections)
        return
    for features, selection in zip(pooled, selections, strict=True):
        setattr(features, SELECTION_ATTR, selection)


def selections_of(output: Any, placeholders_per_row: list[int]) -> list[ImageSelection] | None:
    pooled = output.pooler_output
    if not isinstance(pooled, torch.Tensor):
        found = [getattr(features, SELECTION_ATTR, None) for features in pooled]
        return None if any(s is None for s in found) else found
    found = getattr(pooled, SELECTION_ATTR, None) or getattr(output, SELECTION_ATTR, None)
    if found is None or len(found) == len(pooled):
        return found
    return expanded(found, len(pooled) // len(found), placeholders_per_row)


def expanded(selections: list[ImageSelection], times: int, placeholders_per_row: list[int]) -> list[ImageSelection]:
    """The selections in the order generate expanded their features: each sample's group, `times` times over.

    The expanded input_ids repeat each sample's row `times` times, so every times-th row's placeholder count
    says how many rows of selections belong to that sample.
    """
    out, start = [], 0
    for count in placeholders_per_row[::times]:
        group, rows = [], 0
        while rows < count:
            group.append(selections[start])
            rows += selections[start].num_rows
            start += 1
        out += group * times
    return out


def kept_rows(pooled: Pooled, selections: list[ImageSelection]) -> Pooled:
    rows = [features.index_select(0, s.rows) for features, s in zip(pooled, selections, strict=True)]
    return torch.stack(rows) if isinstance(pooled, torch.Tensor) else rows
