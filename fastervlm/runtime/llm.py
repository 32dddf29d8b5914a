"""In-LLM pruning: at each stage layer K, score visual tokens from q/k and run layers >= K on fewer.

Layers below the first stage and their KV cache keep every token; each stage compacts the previous stage's
sequence (dropping visual tokens, inserting tokens the method made) and gives its layers a mask and positions
rebuilt for it (prefill), and at each decode step a mask sized to their own, shorter cache. Nothing here
forces eager attention: the scores come from the q/k projections layer K-1 computes anyway (or, for methods that
score with layer K's own projections, from those applied to its input once), with the model's own rotary
embedding.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask

from fastervlm.methods.signals import LlmMerged, LlmSignals, LlmStages
from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.sequence import Compaction
from fastervlm.runtime.wrap import InstanceBound, wrap

SCORES_PER_CHUNK = 2**24
Selection = list[torch.Tensor | LlmMerged]  # per sample: kept visual indices, or kept indices plus made tokens


def last_real_column(mask: torch.Tensor) -> torch.Tensor:
    """Per sample, the last column the mask marks real (the end of a left- or right-padded row)."""
    length = mask.shape[1]
    return length - 1 - mask.flip(dims=[1]).long().argmax(dim=1)


def shortened_positions(plan: Compaction, positions: torch.Tensor, contiguous: bool) -> torch.Tensor:
    """Positions (..., batch, L) of a stage's shorter sequence: renumbered, or each token's own (a made token takes
    its anchor's). Leading rows (M-RoPE's t, h, w) are treated alike, each as the 1-D ids would be."""
    if contiguous and positions.dim() == 2:
        return plan.positions(positions)
    if contiguous:
        return torch.stack([plan.positions(p) for p in positions])
    index = plan.index.to(positions.device).expand(*positions.shape[:-2], *plan.index.shape)
    return torch.where(plan.valid.to(positions.device), positions.gather(-1, index), 0)


class LlmPruner(InstanceBound):
    """Hooks on one language model for a method that prunes inside it, at one or more stage layers.

    What a forward computes is per call (runtime/call.py), so concurrent forwards each see their own.
    """

    phase = CallLocal()  # "prefill" or "decode" while a pruned forward runs
    visual = CallLocal()  # (batch, L) visual columns of the current stage's sequence
    origin = CallLocal()  # (batch, L) each column's index in the unpadded prefill, -1 if made
    plans = CallLocal(())  # one per stage, of the last prefill
    _input_lengths = CallLocal(())
    _image_tokens = CallLocal(())
    _step = CallLocal()

    def __init__(
        self,
        language_model: nn.Module,
        stages: LlmStages,
        select: Callable[[LlmSignals], Selection],
        needs: frozenset[str],
        injections: tuple[str, ...] = (),
    ) -> None:
        """injections: language-model methods (hidden, visual_pos_masks, visual_embeds) -> hidden that add
        per-visual-token features between layers (Qwen3-VL's deepstack); they follow the kept tokens."""
        layers = language_model.layers
        self.language_model, self.layers, self.stages = language_model, layers, stages
        self.select, self.needs = select, needs
        self.config = language_model.config
        self.apply_rope = inspect.getmodule(type(layers[0].self_attn)).apply_rotary_pos_emb
        self.handles = [language_model.register_forward_pre_hook(self._on_model, with_kwargs=True)]
        self.undos = [wrap(language_model, name, self._inject) for name in injections]
        if stages.score == "previous" and needs & {"llm_query_row", "llm_keys"}:
            for k in stages.layers:
                attention = layers[k - 1].self_attn
                self.handles += [
                    attention.register_forward_pre_hook(self._on_attention, with_kwargs=True),
                    attention.q_proj.register_forward_hook(self._on_query),
                    attention.k_proj.register_forward_hook(self._on_keys),
                ]
        for index in range(stages.layers[0], len(layers)):
            hook = self._layer_hook(index)
            self.handles.append(layers[index].register_forward_pre_hook(hook, with_kwargs=True))

    def removers(self) -> list[Callable[[], None]]:
        return [h.remove for h in self.handles] + self.undos

    def _inject(
        self, original: Callable[..., Any], hidden: torch.Tensor, visual_pos_masks: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        """Per-visual-token additions on a shortened prefill: each kept token gets its own row, made tokens none.

        embeds holds one row per True of the full-length mask, in row-major order; the stages run so far say which
        of those columns the shorter sequence still holds.
        """
        if self.phase != "prefill" or hidden.shape[1] == visual_pos_masks.shape[1] or not self.plans:
            return original(hidden, visual_pos_masks, embeds)
        rows = torch.full(visual_pos_masks.shape, -1, dtype=torch.long, device=visual_pos_masks.device)
        rows[visual_pos_masks] = torch.arange(int(visual_pos_masks.sum()), device=rows.device)
        for plan in self.plans:
            rows = plan.gather(rows.to(plan.index.device), fill=-1)
        kept = rows >= 0
        return original(hidden, kept.to(visual_pos_masks.device), embeds[rows[kept].to(embeds.device)])

    def begin(
        self, phase: str | None, columns: torch.Tensor | None = None, plans: list[Compaction] | None = None
    ) -> None:
        """Arm for a prefill (its image columns) or a decode step (the stage plans of the prefill it continues)."""
        self.phase, self._step = phase, {}
        if phase == "prefill":
            self.visual, self.plans = columns, []
            self._image_tokens = columns.sum(dim=1).tolist()
        elif phase == "decode":
            self.plans = list(plans or [])

    @property
    def seq_len_per_layer(self) -> list[list[int]]:
        """Per sample, the real tokens entering each decoder layer during the last prefill."""
        lengths = [self._input_lengths] + [plan.mask.sum(dim=1).tolist() for plan in self.plans]
        bounds = [0, *self.stages.layers[: len(self.plans)], len(self.layers)]
        spans = [bounds[s + 1] - bounds[s] for s in range(len(lengths))]
        per_sample = zip(*lengths, strict=True)
        return [[n for stage, n in enumerate(sample) for _ in range(spans[stage])] for sample in per_sample]

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
        text = None
        if positions.dim() == 3 and positions.shape[0] == 4:  # M-RoPE: a text row (for masks), then (t, h, w) rows
            text, positions = positions[0], positions[1:]
        self._step.update(mask=mask, positions=positions, text=text, cache=cache)
        if self.phase == "prefill":
            self._input_lengths = mask.sum(dim=1).tolist()
            self.origin = (mask.long().cumsum(dim=1) - 1).masked_fill(mask == 0, -1).to(embeds.device)
            if "llm_input_embeds" in self.needs:
                rows = [self._query_rows(b, mask[b].bool()) for b in range(batch)]
                self._step["image_embeds"] = [embeds[b, self.visual[b]].detach() for b in range(batch)]
                self._step["query_embeds"] = [embeds[b, r].detach() for b, r in enumerate(rows)]

    def _on_attention(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.phase == "prefill":
            self._step.update(rope=kwargs["position_embeddings"], attention=module)

    def _on_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.phase == "prefill":
            self._step["query"] = output.detach()

    def _on_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.phase == "prefill":
            self._step["keys"] = output.detach()

    # Scoring: attention the visual tokens receive, from the chosen query rows only; the keys themselves.

    def _scoring(self, stage: int, hidden: torch.Tensor) -> dict[str, Any]:
        """q/k projections (batch, L, heads * head_dim), rotary tables and the attention module that scores."""
        step = self._step
        if self.stages.score == "previous":
            return {"query": step["query"], "keys": step["keys"], "rope": step["rope"], "attention": step["attention"]}
        layer = self.layers[self.stages.layers[stage]]
        attention = layer.self_attn
        normed = layer.input_layernorm(hidden)
        return {
            "query": attention.q_proj(normed) if "llm_query_row" in self.needs else None,
            "keys": attention.k_proj(normed),
            "rope": self.language_model.rotary_emb(hidden, position_ids=step["positions"]),
            "attention": attention,
        }

    def _rotated_keys(self, scoring: dict[str, Any]) -> torch.Tensor:
        """(batch, kv_heads, L, head_dim) keys with the rotary embedding applied."""
        batch, length = self._step["mask"].shape
        cos, sin = (t.expand(batch, *t.shape[1:]) for t in scoring["rope"])  # forward() without positions: batch 1
        keys = scoring["keys"].view(batch, length, -1, scoring["attention"].head_dim).transpose(1, 2)
        return self.apply_rope(keys, keys, cos, sin)[0]

    def _query_attention(self, scoring: dict[str, Any], keys: torch.Tensor, rows: list[torch.Tensor]) -> list:
        step, attention = self._step, scoring["attention"]
        mask = step["mask"].bool()
        batch, length = mask.shape
        cos, sin = (t.expand(batch, *t.shape[1:]) for t in scoring["rope"])
        queries = scoring["query"].view(batch, length, -1, attention.head_dim).transpose(1, 2)
        keys = keys.repeat_interleave(queries.shape[1] // keys.shape[1], dim=1)  # grouped-query heads
        # Rows in chunks of about 2**24 scores (64 MB in fp32): FitPrune scores every visual row, thousands on
        # LLaVA-NeXT, whose (heads, rows, L) map would otherwise be gigabytes at once.
        chunk = max(1, SCORES_PER_CHUNK // (queries.shape[1] * length))
        out = []
        for b in range(batch):
            parts = []
            for r in rows[b].split(chunk):
                q = self.apply_rope(
                    queries[b : b + 1, :, r], queries[b : b + 1, :, r], cos[b : b + 1, r], sin[b : b + 1, r]
                )[0]
                logits = (q.float() @ keys[b : b + 1].float().transpose(-1, -2)) * attention.scaling  # (1, H, q, L)
                allowed = mask[b].unsqueeze(0) & (torch.arange(length, device=mask.device) <= r.unsqueeze(1))
                probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)[0]
                reduced = probs.mean(dim=0) if self.stages.heads == "mean" else probs.max(dim=0).values
                parts.append(reduced[:, self.visual[b]])
            out.append(torch.cat(parts) if parts else keys.new_zeros(0, int(self.visual[b].sum())).float())
        return out

    def _query_rows(self, b: int, real: torch.Tensor) -> torch.Tensor:
        last = last_real_column(real.unsqueeze(0))
        if self.stages.queries == "last":
            return last
        visual = self.visual[b].to(real.device)
        after = torch.arange(real.numel(), device=real.device) > int(visual.long().argmax())
        text = after & real & ~visual
        if self.stages.queries == "visual_text":
            return (text | (real & visual)).nonzero().squeeze(1)
        rows = text.nonzero().squeeze(1)
        return rows if rows.numel() else last

    # Layers from the first stage on: shorten at each stage layer (prefill), feed its layers their mask/positions.

    def _layer_hook(self, index: int) -> Callable[..., tuple | None]:
        stage = bisect.bisect_right(self.stages.layers, index) - 1
        starts = self.stages.layers[stage] == index

        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
            if self.phase is None:
                return None
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if starts:
                hidden = self._shorten(stage, hidden) if self.phase == "prefill" else hidden
                self._step["layer_kwargs"] = self._layer_kwargs(stage, hidden)
            return (hidden,), {**kwargs, **self._step["layer_kwargs"]}

        return hook

    def _shorten(self, stage: int, hidden: torch.Tensor) -> torch.Tensor:
        step, visual, needs = self._step, self.visual, self.needs
        batch = hidden.shape[0]
        mask = step["mask"].bool()
        rows = [self._query_rows(b, mask[b]) for b in range(batch)]
        per_sample = {
            "visual_index": [self.origin[b, visual[b]] for b in range(batch)],
            "query_index": [self.origin[b, rows[b]] for b in range(batch)],
            "query_is_visual": [visual[b, rows[b]] for b in range(batch)],
        }
        if needs & {"llm_query_row", "llm_keys"}:
            scoring = self._scoring(stage, hidden)
            keys = self._rotated_keys(scoring)
            if "llm_query_row" in needs:
                per_sample["query_attention"] = self._query_attention(scoring, keys, rows)
            if "llm_keys" in needs:
                flat = keys.transpose(1, 2).flatten(2).detach()  # (batch, L, kv_heads * head_dim)
                per_sample["visual_keys"] = [flat[b, visual[b]] for b in range(batch)]
                per_sample["query_keys"] = [flat[b, rows[b]] for b in range(batch)]
        if "llm_visual_states" in needs:
            per_sample["visual_states"] = [hidden[b, visual[b]].detach() for b in range(batch)]
        if "llm_normed_states" in needs:
            normed = self.language_model.norm(hidden).detach()
            per_sample["visual_normed"] = [normed[b, visual[b]] for b in range(batch)]
            per_sample["query_normed"] = [normed[b, rows[b]] for b in range(batch)]
        signals = LlmSignals(
            stage=stage,
            num_layers=len(self.layers),
            image_tokens=self._image_tokens,
            image_embeds=step.get("image_embeds"),
            query_embeds=step.get("query_embeds"),
            **per_sample,
        )
        keep = ~visual
        made, anchor, tokens = [], [], []
        for b, chosen in enumerate(self.select(signals)):
            kept, new = (chosen.kept, chosen.tokens) if isinstance(chosen, LlmMerged) else (chosen, hidden[b, :0])
            columns = visual[b].nonzero().squeeze(1)
            keep[b, columns[kept.to(columns.device)]] = True
            made.append(len(new))
            anchor.append(int(columns[-1]) if len(columns) else 0)
            tokens.append(new)
        plan = Compaction.build(
            keep,
            step["mask"],
            made=torch.tensor(made, device=keep.device),
            anchor=torch.tensor(anchor, device=keep.device),
            base=self.plans[-1] if self.plans else None,
        )
        self.plans.append(plan)
        step["positions"] = shortened_positions(plan, step["positions"], self.stages.contiguous)
        if step["text"] is not None:
            step["text"] = plan.positions(step["text"])
        step["mask"] = plan.mask
        self.visual = plan.gather(visual, fill=False) | plan.made_slots
        self.origin = plan.gather(self.origin, fill=-1)
        return plan.place(plan.gather(hidden, fill=0), tokens)

    def _layer_kwargs(self, stage: int, hidden: torch.Tensor) -> dict[str, Any]:
        plan, step = self.plans[stage], self._step
        mask, positions, text = step["mask"], step["positions"], step["text"]
        if self.phase == "decode":
            mask = plan.decode_mask(step["mask"], step["mask"].shape[1] - plan.prefill_len)
            if self.stages.contiguous:
                positions = plan.decode_positions(positions)
            if text is not None:
                text = plan.decode_positions(text)
        # What the stock text model hands its layers: the 1-D ids (M-RoPE's text row; none for bare (t, h, w) rows).
        layer_positions = text if text is not None else positions if positions.dim() == 2 else None
        causal = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=mask,
            past_key_values=step["cache"],
            position_ids=layer_positions,
            layer_idx=self.stages.layers[stage],
        )
        return {
            "attention_mask": causal,
            "position_ids": layer_positions,
            "position_embeddings": self.language_model.rotary_emb(hidden, position_ids=positions),
        }
