"""In-LLM pruning: score image tokens at layer K-1 from a few query rows, run layers >= K on fewer tokens.

Layers below K and their KV cache keep every token; layers from K on get the shortened hidden states, a
mask and positions rebuilt for them (prefill), and at each decode step a mask sized to their own, shorter
cache. Nothing here forces eager attention: the scores come from the q/k projections the layer computes
anyway, with the model's own rotary embedding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask

from fastervlm.methods.signals import LlmSignals
from fastervlm.runtime.sequence import Compaction


def last_real_column(mask: torch.Tensor) -> torch.Tensor:
    """Per sample, the last column the mask marks real (the end of a left- or right-padded row)."""
    length = mask.shape[1]
    return length - 1 - mask.flip(dims=[1]).long().argmax(dim=1)


class LlmStage:
    """Hooks on one language model for a method that prunes at decoder layer K."""

    def __init__(
        self,
        language_model: nn.Module,
        layer: int,
        select: Callable[[LlmSignals], list[torch.Tensor]],
        score: str,
        contiguous: bool,
    ) -> None:
        layers = language_model.layers
        if not 1 <= layer < len(layers):
            raise ValueError(
                f"layer must be in [1, {len(layers) - 1}] for this {len(layers)}-layer language model, got {layer}"
            )
        self.language_model, self.layers, self.k = language_model, layers, layer
        self.select, self.score, self.contiguous = select, score, contiguous
        self.config = language_model.config
        attention = layers[layer - 1].self_attn
        self.attention = attention
        self.apply_rope = inspect.getmodule(type(attention)).apply_rotary_pos_emb
        self.phase: str | None = None  # "prefill" or "decode" while a pruned forward runs
        self.columns: torch.Tensor | None = None  # (batch, L) image columns of the prefill
        self.plan: Compaction | None = None  # layer-K compaction of the last prefill
        self.seq_len_per_layer: list[list[int]] = []
        self._step: dict[str, Any] = {}
        self.handles = [
            language_model.register_forward_pre_hook(self._on_model, with_kwargs=True),
            attention.register_forward_pre_hook(self._on_attention, with_kwargs=True),
            attention.q_proj.register_forward_hook(self._on_query),
            attention.k_proj.register_forward_hook(self._on_keys),
            *(layers[i].register_forward_pre_hook(self._on_layer, with_kwargs=True) for i in range(layer, len(layers))),
        ]

    def removers(self) -> list[Callable[[], None]]:
        return [h.remove for h in self.handles]

    def begin(self, phase: str | None, columns: torch.Tensor | None = None, plan: Compaction | None = None) -> None:
        """Arm for a prefill (its image columns) or a decode step (the layer-K plan of the prefill it continues)."""
        self.phase, self._step = phase, {}
        if phase == "prefill":
            self.columns, self.plan = columns, None
        elif phase == "decode":
            self.plan = plan

    # Captures.

    def _on_model(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.phase is None:
            return
        embeds = kwargs.get("inputs_embeds")
        batch, length = embeds.shape[:2]
        cache = kwargs.get("past_key_values")
        mask = kwargs.get("attention_mask")
        past = cache.get_seq_length() if cache is not None else 0
        if mask is None:
            mask = torch.ones(batch, past + length, dtype=torch.long, device=embeds.device)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = (torch.arange(length, device=embeds.device) + past).expand(batch, length)
        self._step.update(mask=mask, positions=positions, cache=cache)

    def _on_attention(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.phase == "prefill":
            self._step["rope"] = kwargs["position_embeddings"]

    def _on_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.phase == "prefill":
            self._step["query"] = output.detach()

    def _on_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.phase == "prefill":
            self._step["keys"] = output.detach()

    # Scoring: attention the image tokens receive at layer K-1, from the chosen query rows only.

    def _image_attention(self) -> list[torch.Tensor]:
        step, attention = self._step, self.attention
        head_dim = attention.head_dim
        cos, sin = step["rope"]
        mask = step["mask"].bool()
        batch, length = mask.shape
        queries = step["query"].view(batch, length, -1, head_dim).transpose(1, 2)
        keys = step["keys"].view(batch, length, -1, head_dim).transpose(1, 2)
        keys = self.apply_rope(keys, keys, cos, sin)[0]
        keys = keys.repeat_interleave(queries.shape[1] // keys.shape[1], dim=1)  # grouped-query heads
        out = []
        for b in range(batch):
            rows = self._query_rows(b, mask[b])
            q = self.apply_rope(
                queries[b : b + 1, :, rows], queries[b : b + 1, :, rows], cos[b : b + 1, rows], sin[b : b + 1, rows]
            )[0]
            logits = (q.float() @ keys[b : b + 1].float().transpose(-1, -2)) * attention.scaling  # (1, H, q, L)
            allowed = mask[b].unsqueeze(0) & (torch.arange(length, device=mask.device) <= rows.unsqueeze(1))
            probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            out.append(probs.mean(dim=(0, 1, 2))[self.columns[b]])
        return out

    def _query_rows(self, b: int, real: torch.Tensor) -> torch.Tensor:
        if self.score == "last":
            return last_real_column(real.unsqueeze(0))
        image = self.columns[b]
        first = int(image.long().argmax())
        after = torch.arange(real.numel(), device=real.device) > first
        return (after & real & ~image).nonzero().squeeze(1)

    # Layers >= K: shorten once at layer K (prefill), then feed every later layer the matching mask/positions.

    def _on_layer(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
        if self.phase is None:
            return None
        hidden = args[0] if args else kwargs.pop("hidden_states")
        if "layer_kwargs" not in self._step:
            hidden = self._shorten(hidden) if self.phase == "prefill" else hidden
            self._step["layer_kwargs"] = self._layer_kwargs(hidden)
        return (hidden,), {**kwargs, **self._step["layer_kwargs"]}

    def _shorten(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = self._step["mask"]
        kept = self.select(LlmSignals(image_attention=self._image_attention()))
        keep = ~self.columns.clone()
        for b, indices in enumerate(kept):
            image = self.columns[b].nonzero().squeeze(1)
            keep[b, image[indices.to(image.device)]] = True
        self.plan = Compaction.build(keep, mask)
        real = mask.sum(dim=1).tolist()
        short = self.plan.mask.sum(dim=1).tolist()
        self.seq_len_per_layer = [
            [r] * self.k + [s] * (len(self.layers) - self.k) for r, s in zip(real, short, strict=True)
        ]
        positions = self._step["positions"]
        self._step["positions"] = (
            self.plan.positions(positions) if self.contiguous else self.plan.gather(positions, fill=0)
        )
        self._step["mask"] = self.plan.mask
        return self.plan.gather(hidden, fill=0)

    def _layer_kwargs(self, hidden: torch.Tensor) -> dict[str, Any]:
        plan, step = self.plan, self._step
        if self.phase == "decode":
            step["mask"] = plan.decode_mask(step["mask"], step["mask"].shape[1] - plan.prefill_len)
            if self.contiguous:
                step["positions"] = plan.decode_positions(step["positions"])
        positions = step["positions"]
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=step["mask"],
            past_key_values=step["cache"],
            position_ids=positions,
            layer_idx=self.k,
        )
        return {
            "attention_mask": mask,
            "position_ids": positions,
            "position_embeddings": self.language_model.rotary_emb(hidden, position_ids=positions),
        }
