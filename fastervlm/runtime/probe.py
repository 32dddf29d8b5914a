"""Patch scores read from one vision attention layer, without materialising its attention maps."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from fastervlm.models.base import VisionAttention, VisionReceived
from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.wrap import InstanceBound


def cls_attention_row(query: torch.Tensor, keys: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """Post-softmax attention of token 0 ([CLS]) to the patches, averaged over heads: (batch, N).

    query: (batch, dim) projected [CLS] query; keys: (batch, 1 + N, dim) projected keys. The softmax runs
    over all 1 + N keys, [CLS] included, and is not renormalised over the patches, as in the reference
    (which reads attentions[layer][:, :, 0, 1:] from an eager run). fp32 so bf16 models rank as eager does.
    """
    batch, tokens, dim = keys.shape
    head_dim = dim // num_heads
    q = query.float().reshape(batch, num_heads, 1, head_dim)
    k = keys.float().reshape(batch, tokens, num_heads, head_dim).transpose(1, 2)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)  # (batch, heads, 1, 1 + N)
    return probs[:, :, 0, 1:].mean(dim=1)


class Probe(InstanceBound):
    """What a vision probe reads while armed, per call (runtime/call.py): concurrent encodes keep their own."""

    armed = CallLocal(False)
    scores = CallLocal()  # the signal the probe computes
    keys = CallLocal()  # (batch, 1 + N, head_dim), heads averaged, if asked for
    cls_features = CallLocal()  # (batch, dim) the layer's output at [CLS], if asked for
    _query = CallLocal()
    _call = CallLocal()  # the scored attention's call keywords


class ClsRowProbe(Probe):
    """Reads q_proj / k_proj outputs of one attention module while armed; computes the [CLS] row.

    Hooking the projections' outputs costs nothing extra: the model computes them anyway, and the
    attention kernel (sdpa, flash, eager) is left alone.
    """

    signal = "cls_attention"

    def __init__(self, attention: VisionAttention, keys: bool = False, cls_features: bool = False) -> None:
        self.attention = attention
        self.want_keys = keys
        self.handles = [
            attention.q_proj.register_forward_hook(self._on_query),
            attention.k_proj.register_forward_hook(self._on_keys),
        ]
        if cls_features:
            if attention.layer is None:
                raise ValueError("this model's adapter does not expose the scored encoder layer for [CLS] features")
            self.handles.append(attention.layer.register_forward_hook(self._on_layer))

    def arm(self) -> None:
        self.armed, self.scores, self.keys, self.cls_features, self._query = True, None, None, None, None

    def disarm(self) -> None:
        self.armed, self._query = False, None

    def _on_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.armed:
            self._query = output[:, 0].detach()

    def _on_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.armed:
            if self._query is None:
                raise RuntimeError("k_proj ran before q_proj in the scored vision layer; cannot form the [CLS] row")
            a = self.attention
            self.scores = cls_attention_row(self._query, output.detach(), a.num_heads, a.scale)
            if self.want_keys:
                self.keys = output.detach().unflatten(-1, (a.num_heads, -1)).mean(dim=2)

    def _on_layer(self, module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        if self.armed:
            hidden = output[0] if isinstance(output, tuple) else output
            self.cls_features = hidden[:, 0].detach()

    def removers(self) -> list[Callable[[], None]]:
        return [h.remove for h in self.handles]


def received_attention(
    query: torch.Tensor, keys: torch.Tensor, bounds: list[int], scale: float, chunk: int = 1 << 22
) -> torch.Tensor:
    """Attention each token receives, (seq,): post-softmax, averaged over the heads and over the queries of its
    segment (an image, frame or window: the tokens a block lets attend to each other).

    query, keys: (seq, heads, head_dim) after the rotary embedding. Queries go in chunks of about `chunk`
    attention entries, so no more than one chunk of one map exists at a time. fp32 so bf16 models rank as eager does.
    """
    heads = query.shape[1]
    out = query.new_zeros(query.shape[0], dtype=torch.float32)
    for start, end in itertools.pairwise(bounds):
        n = end - start
        k = keys[start:end].float().transpose(0, 1)  # (heads, n, head_dim)
        step = max(1, chunk // max(heads * n, 1))
        total = out.new_zeros(n)
        for q0 in range(start, end, step):
            q = query[q0 : min(q0 + step, end)].float().transpose(0, 1)  # (heads, c, head_dim)
            total += torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1).sum(dim=(0, 1))
        out[start:end] = total / (heads * n)
    return out


class ReceivedRowsProbe(Probe):
    """The received attention of towers that run each view as its own batch row (SigLIP in LLaVA-OneVision).

    Reads q_proj / k_proj outputs while armed; `scores`: (views, N), each patch's attention received from its own
    view's queries, heads and queries averaged.
    """

    signal = "received_attention"

    def __init__(self, attention: VisionAttention) -> None:
        self.attention = attention
        self.handles = [
            attention.q_proj.register_forward_hook(self._on_query),
            attention.k_proj.register_forward_hook(self._on_keys),
        ]

    def arm(self) -> None:
        self.armed, self.scores, self._query = True, None, None

    def disarm(self) -> None:
        self.armed, self._query = False, None

    def _on_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.armed:
            self._query = output.detach()

    def _on_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not self.armed:
            return
        if self._query is None:
            raise RuntimeError("k_proj ran before q_proj in the scored vision layer; cannot form the received score")
        views, n, dim = output.shape
        heads = self.attention.num_heads
        flat = (views * n, heads, dim // heads)
        bounds = list(range(0, views * n + 1, n))
        received = received_attention(
            self._query.reshape(flat), output.detach().reshape(flat), bounds, self.attention.scale
        )
        self.scores = received.view(views, n)

    def removers(self) -> list[Callable[[], None]]:
        return [h.remove for h in self.handles]


class ReceivedProbe(Probe):
    """Reads one vision attention's segment bounds and rotary tables, and its fused qkv output, while armed.

    `scores`: (seq / group,) received attention per merged token, in the tower's row order. Hooks only read what
    the block computes anyway; the attention kernel (sdpa, flash, eager) is left alone.
    """

    signal = "received_attention"

    def __init__(self, attention: VisionReceived) -> None:
        self.attention = attention
        self.handles = [
            attention.attention.register_forward_pre_hook(self._on_call, with_kwargs=True),
            attention.qkv.register_forward_hook(self._on_qkv),
        ]

    def arm(self) -> None:
        self.armed, self.scores, self._call = True, None, None

    def disarm(self) -> None:
        self.armed, self._call = False, None

    def _on_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.armed:
            self._call = kwargs

    def _on_qkv(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not self.armed:
            return
        if self._call is None or "cu_seqlens" not in self._call or "position_embeddings" not in self._call:
            raise RuntimeError("the scored vision attention was not called with cu_seqlens and position_embeddings")
        a = self.attention
        seq = output.shape[0]
        query, keys, _ = output.detach().reshape(seq, 3, a.num_heads, -1).unbind(1)
        cos, sin = self._call["position_embeddings"]
        query, keys = a.apply_rope(query, keys, cos, sin)
        bounds = [int(b) for b in self._call["cu_seqlens"].tolist()]
        self.scores = received_attention(query, keys, bounds, a.scale).view(-1, a.group).mean(dim=1)

    def removers(self) -> list[Callable[[], None]]:
        return [h.remove for h in self.handles]
