"""Compaction: the one place where columns are dropped, re-padded, and masks/positions translated."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastervlm.runtime.sequence import Compaction


def test_left_padded_ragged_rows():
    keep = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 1, 1]]).bool()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    plan = Compaction.build(keep, mask)
    ids = torch.arange(12).view(2, 6)
    assert plan.gather(ids, fill=-1).tolist() == [[-1, 0, 1, 4, 5], [6, 7, 8, 10, 11]]
    assert plan.mask.tolist() == [[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert plan.removed.tolist() == [2, 1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    assert plan.positions(positions).tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 1, 2]]


def test_repadding_adds_left_padding_for_the_sample_that_lost_more():
    keep = torch.tensor([[1, 0, 0, 0, 1], [1, 1, 0, 1, 1]]).bool()
    plan = Compaction.build(keep, torch.ones(2, 5, dtype=torch.long))
    assert plan.gather(torch.arange(10).view(2, 5), fill=-1).tolist() == [[-1, -1, 0, 4], [5, 6, 8, 9]]
    assert plan.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert plan.positions(torch.arange(5).expand(2, 5)).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_right_padding_stays_right():
    keep = torch.tensor([[1, 0, 1, 1], [1, 0, 1, 1]]).bool()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    plan = Compaction.build(keep, mask)
    assert plan.gather(torch.arange(8).view(2, 4), fill=-1).tolist() == [[0, 2, 3], [4, 6, 7]]
    assert plan.mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_decode_translation():
    keep = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 1]]).bool()
    plan = Compaction.build(keep, torch.ones(2, 4, dtype=torch.long))
    full_mask = torch.ones(2, 6, dtype=torch.long)  # caller's prompt (4) + two generated tokens
    assert plan.decode_mask(full_mask, new_tokens=2).tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert plan.decode_mask(None, new_tokens=1).tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert plan.decode_positions(torch.tensor([[5], [5]])).tolist() == [[3], [4]]


def test_made_tokens_follow_their_anchor_and_positions_stay_contiguous():
    keep = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 0, 1]]).bool()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])
    plan = Compaction.build(keep, mask, made=torch.tensor([2, 1]), anchor=torch.tensor([4, 5]))
    ids = torch.arange(14).view(2, 7)
    got = plan.gather(ids, fill=-1).tolist()
    assert got == [[0, 1, 3, -1, -1, 5, 6], [7, 8, 9, 10, 11, -1, 13]]
    assert plan.made.tolist() == [[-1, -1, -1, 0, 1, -1, -1], [-1, -1, -1, -1, -1, 0, -1]]
    assert plan.mask.tolist() == [[1] * 7, [0, 0, 1, 1, 1, 1, 1]]
    assert plan.removed.tolist() == [0, 0]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    assert plan.positions(positions).tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 3, 4]]
    made = [torch.tensor([[10.0], [20.0]]), torch.tensor([[30.0]])]
    placed = plan.place(plan.gather(ids.unsqueeze(-1).float(), fill=0), made)
    assert placed[..., 0].tolist() == [[0, 1, 3, 10, 20, 5, 6], [7, 8, 9, 10, 11, 30, 13]]


def test_stages_count_removals_from_the_callers_prefill():
    first = Compaction.build(torch.tensor([[1, 0, 0, 1, 1]]).bool(), None)
    second = Compaction.build(
        torch.tensor([[1, 0, 1]]).bool(), first.mask, made=torch.tensor([1]), anchor=torch.tensor([1]), base=first
    )
    assert second.prefill_len == 5 and second.removed.tolist() == [2]
    assert second.decode_positions(torch.tensor([[5]])).tolist() == [[3]]
    assert second.decode_mask(torch.ones(1, 6, dtype=torch.long), new_tokens=1).tolist() == [[1, 1, 1, 1]]


def test_a_later_stage_drops_the_padding_an_earlier_one_added():
    """Stage 1 cuts sample 0 short (left padding added), stage 2 cuts sample 1: the width follows the longest
    sample, not every stage's padding, and the added padding counts as no removed token."""
    first = Compaction.build(torch.tensor([[1, 0, 0, 1, 1], [1, 1, 1, 1, 1]]).bool(), None)
    assert first.mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    second = Compaction.build(torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1]]).bool(), first.mask, base=first)
    assert second.mask.tolist() == [[1, 1, 1], [1, 1, 1]] and second.removed.tolist() == [2, 2]
    positions = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    assert second.positions(positions).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert second.gather(first.gather(torch.arange(10).view(2, 5), fill=-1), fill=-1).tolist() == [[0, 3, 4], [5, 8, 9]]


def test_identity():
    plan = Compaction.build(torch.ones(2, 3, dtype=torch.bool), None)
    assert plan.identity and plan.gather(torch.arange(6).view(2, 3), fill=-1).tolist() == [[0, 1, 2], [3, 4, 5]]


@st.composite
def left_padded_batches(draw):
    batch, length = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    pads = [draw(st.integers(0, length - 1)) for _ in range(batch)]
    mask = torch.tensor([[0] * p + [1] * (length - p) for p in pads])
    keep = torch.tensor([[draw(st.booleans()) or m == 0 for m in row] for row in mask.tolist()])
    return keep, mask


@settings(max_examples=200, deadline=None)
@given(left_padded_batches())
def test_compaction_keeps_exactly_the_kept_real_tokens_in_order(case):
    keep, mask = case
    plan = Compaction.build(keep, mask)
    ids = torch.arange(keep.numel()).view(keep.shape) + 1
    out = plan.gather(ids, fill=0)
    for b in range(keep.shape[0]):
        expected = ids[b][keep[b] & mask[b].bool()].tolist()
        assert out[b][plan.mask[b].bool()].tolist() == expected
        real = plan.mask[b].tolist()
        assert real == sorted(real), "padding must stay on the left"
    compact_positions = plan.positions((mask.cumsum(-1) - 1).clamp(min=0))
    expected_positions = (plan.mask.cumsum(-1) - 1).clamp(min=0)
    assert torch.equal(compact_positions[plan.mask.bool()], expected_positions[plan.mask.bool()])


@st.composite
def batches_with_made_tokens(draw):
    keep, mask = draw(left_padded_batches())
    made, anchor = [], []
    for row in mask.tolist():
        real = [i for i, m in enumerate(row) if m]
        anchor.append(draw(st.sampled_from(real)))
        made.append(draw(st.integers(0, 3)))
    return keep, mask, torch.tensor(made), torch.tensor(anchor)


@settings(max_examples=200, deadline=None)
@given(batches_with_made_tokens())
def test_made_tokens_land_after_their_anchor_with_contiguous_positions(case):
    keep, mask, made, anchor = case
    plan = Compaction.build(keep, mask, made=made, anchor=anchor)
    ids = torch.arange(keep.numel()).view(keep.shape) + 1
    out = plan.gather(ids, fill=0)
    for b in range(keep.shape[0]):
        real = mask[b].bool()
        before = [int(i) for c, i in enumerate(ids[b]) if keep[b, c] and real[c] and c <= anchor[b]]
        after = [int(i) for c, i in enumerate(ids[b]) if keep[b, c] and real[c] and c > anchor[b]]
        assert out[b][plan.mask[b].bool()].tolist() == before + [0] * int(made[b]) + after
        assert plan.made[b][plan.made[b] >= 0].tolist() == list(range(int(made[b])))
    compact_positions = plan.positions((mask.cumsum(-1) - 1).clamp(min=0))
    expected_positions = (plan.mask.cumsum(-1) - 1).clamp(min=0)
    assert torch.equal(compact_positions[plan.mask.bool()], expected_positions[plan.mask.bool()])
