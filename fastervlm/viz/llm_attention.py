"""The attention the language model's last prompt token pays to the image tokens, per decoder layer.

Read from the q_proj / k_proj outputs each layer computes anyway, with the layer's own rotary embedding, so the
attention kernel (sdpa, flash) is left alone and no (layers, heads, L, L) attention map is ever materialised:
one query row per layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastervlm.models import adapter_for
from fastervlm.runtime.llm import last_real_column


class _LayerRows:
    """Hooks on one decoder layer's attention: keeps its position embeddings and query, scores on the keys."""

    def __init__(self, attention: nn.Module, score: Callable[[nn.Module, dict[str, Any]], torch.Tensor]) -> None:
        self.attention, self.score = attention, score
        self.step: dict[str, Any] = {}
        self.rows: torch.Tensor | None = None  # (batch, L) post-softmax last-token row, heads averaged
        self.handles = [
            attention.register_forward_pre_hook(self._on_attention, with_kwargs=True),
            attention.q_proj.register_forward_hook(self._on_query),
            attention.k_proj.register_forward_hook(self._on_keys),
        ]

    def _on_attention(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.step = {"rope": kwargs["position_embeddings"]}

    def _on_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.step["query"] = output.detach()

    def _on_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.step["keys"] = output.detach()
        self.rows = self.score(self.attention, self.step)
        self.step = {}


def last_token_image_attention(model: nn.Module, inputs: dict, modality: str = "image") -> list[torch.Tensor]:
    """Per sample, (layers, image tokens): the post-softmax attention of the last real prompt token to each of
    the sample's image tokens, averaged over heads, at every decoder layer, from one unpruned forward.

    The softmax runs over all real keys the token may see (text included) and is not renormalised over the
    image tokens, as an eager run's attentions[layer][b, :, -1, image columns].mean(heads) would be; callers
    that want a distribution over the image renormalise. fp32 so bf16/fp16 models score as eager would.
    """
    if getattr(model, "_fastervlm", None) is not None:
        raise ValueError("model is pruned; call fastervlm.unprune(model) first so every image token is scored")
    adapter = adapter_for(model)
    token_ids = {m.name: m.token_id for m in adapter.modalities(model)}
    if modality not in token_ids:
        raise ValueError(f"modality must be one of {sorted(token_ids)}, got {modality!r}")
    ids = inputs["input_ids"]
    image = (ids == token_ids[modality]).cpu()
    if not image.any(dim=1).all():
        raise ValueError(f"every sample needs {modality} tokens in input_ids to score attention to them")
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    last = last_real_column(mask)
    layers = adapter.language_model(model).layers
    apply_rope = inspect.getmodule(type(layers[0].self_attn)).apply_rotary_pos_emb

    def score(attention: nn.Module, step: dict[str, Any]) -> torch.Tensor:
        batch, length = mask.shape
        head_dim = attention.head_dim
        cos, sin = (t.expand(batch, *t.shape[1:]) for t in step["rope"])  # positions computed once: batch 1
        queries = step["query"].view(batch, length, -1, head_dim).transpose(1, 2)
        keys = step["keys"].view(batch, length, -1, head_dim).transpose(1, 2)
        keys = apply_rope(keys, keys, cos, sin)[0]
        keys = keys.repeat_interleave(queries.shape[1] // keys.shape[1], dim=1)  # grouped-query heads
        picked = torch.arange(batch, device=last.device)
        q = queries[picked, :, last].unsqueeze(2)  # (batch, heads, 1, head_dim)
        q = apply_rope(q, q, cos[picked, last].unsqueeze(1), sin[picked, last].unsqueeze(1))[0]
        logits = (q.float() @ keys.float().transpose(-1, -2)) * attention.scaling  # (batch, heads, 1, L)
        allowed = mask.to(logits.device) & (torch.arange(length, device=logits.device) <= last.unsqueeze(1))
        probs = torch.softmax(logits.masked_fill(~allowed[:, None, None], float("-inf")), dim=-1)
        return probs[:, :, 0].mean(dim=1)

    recorders = [_LayerRows(layer.self_attn, score) for layer in layers]
    try:
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)  # the attention rows are the point, not the logits
    finally:
        for recorder in recorders:
            for handle in recorder.handles:
                handle.remove()
    if any(r.rows is None for r in recorders):
        raise RuntimeError("a decoder layer did not run its q_proj / k_proj; cannot read its attention row")
    rows = torch.stack([r.rows for r in recorders], dim=1).cpu()  # (batch, layers, L)
    return [rows[b][:, image[b]] for b in range(ids.shape[0])]
