"""Attach a method to one model instance: hooks, wrappers, per-forward state, and every undo."""

from __future__ import annotations

import copy
import dataclasses
import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastervlm.methods import METHODS, MethodConfig, method_name
from fastervlm.methods.signals import LlmStages, Merged, ViewSignals
from fastervlm.models.base import ImageSelection, Modality, ModelAdapter, VisionReceived
from fastervlm.report import Report
from fastervlm.runtime.arguments import fixed_parameters, named_arguments
from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.generate import check_cache, check_generate, refuse_continuous_batching
from fastervlm.runtime.instruction import InstructionSource, load_tokenizer
from fastervlm.runtime.llm import LlmPruner
from fastervlm.runtime.probe import ClsRowProbe, ReceivedProbe, ReceivedRowsProbe
from fastervlm.runtime.selection import attach_selections, kept_rows, row_mask, selections_of
from fastervlm.runtime.sequence import Compaction, gather_through
from fastervlm.runtime.trim import trim_tower
from fastervlm.runtime.wrap import InstanceBound, wrap

# Inputs holding one entry per token of input_ids, shortened along with it (Qwen2-VL's modality of each token).
PER_TOKEN_INPUTS = ("mm_token_type_ids", "token_type_ids")


def resolve_score(config: MethodConfig, needs: frozenset[str], default: str) -> tuple[MethodConfig, frozenset[str]]:
    """A config with a `score` choice gets the model's default recorded; "received" swaps the [CLS] row need."""
    if not hasattr(config, "score"):
        return config, needs
    config = dataclasses.replace(config, score=config.score or default)
    if config.score == "received" and "vision_cls_row" in needs:
        needs = (needs - {"vision_cls_row"}) | {"vision_received"}
    return config, needs


class Installation(InstanceBound):
    """Everything prune() changed on one model, and (per call, runtime/call.py) the state of its pruned forwards."""

    _encoding = CallLocal()  # the modality being encoded right now
    _kept = CallLocal()  # of the current encode
    _candidates = CallLocal()  # of the current encode, from the adapter
    _instructions = CallLocal()  # of the current encode, one per view
    _rows = CallLocal()  # projected rows of the current encode, and of how many
    _plan = CallLocal()  # of this context's last pruned prefill
    _step_plans = CallLocal(())  # of the current forward call, in order, for its labels
    _report = CallLocal()  # of this context's last prefill
    _continuing = CallLocal()  # the plan of a cache generate() continues on its compact view

    def __init__(self, model: nn.Module, adapter: ModelAdapter, config: MethodConfig) -> None:
        self.model, self.adapter, self.config = model, adapter, config
        self.method_name = method_name(config)
        self.method = METHODS[self.method_name]
        self.config, self.needs = resolve_score(config, self.method.needs, adapter.default_score(model))
        self.modalities: list[Modality] = adapter.modalities(model)
        self.num_patches = adapter.patches_per_view(model)
        self._latest: Report | None = None  # of the last prefill in any context
        self.undos: list[Callable[[], None]] = []
        self.probes: dict[str, ClsRowProbe | ReceivedProbe | ReceivedRowsProbe] = {}
        self.llm: LlmPruner | None = None  # for methods that prune inside the language model
        self.instruction: InstructionSource | None = None  # for methods that read the instruction before the LLM
        # Each pruned prefill's KV cache -> the plans its decode steps need (the sequence's, then each in-LLM
        # stage's). Keyed by the cache, so generations can interleave on one model; weak, so they go with it.
        self._plans: weakref.WeakKeyDictionary[Any, tuple[Compaction, list[Compaction]]] = weakref.WeakKeyDictionary()

    @property
    def report(self) -> Report | None:
        """This thread's (context's) last prefill; one that ran none sees the latest of any, so a caller whose
        generate ran in a worker thread still gets it."""
        own = self._report
        return own if own is not None else self._latest

    @report.setter
    def report(self, value: Report) -> None:
        self._report = self._latest = value

    @classmethod
    def attach(cls, model: nn.Module, adapter: ModelAdapter, config: MethodConfig) -> Installation:
        """Install every hook and wrapper; a check that fails part way undoes what was installed, so a refused
        prune() leaves the stock model (a stale hook would silently change a later prune's results)."""
        self = cls(model, adapter, config)
        try:
            self._install()
        except BaseException:
            self.detach()
            raise
        return self

    def _install(self) -> None:
        model, adapter, config = self.model, self.adapter, self.config
        score_layer = getattr(config, "score_layer", None)
        if self.method.stage == "vision" and self.method.merges and not adapter.supports_merging:
            raise ValueError(
                f"method {self.method_name!r} makes new tokens, which {type(model).__name__} cannot place in its "
                "layout; use a selection method (fastervlm, random, fastv) on this model"
            )
        adapter.check(model, self.needs, score_layer)
        self.undos += adapter.install(model)
        if "instruction" in self.needs:  # the method's config names the LLM tokenizer; None: the model's own
            tokenizer = load_tokenizer(getattr(config, "tokenizer", None) or model.name_or_path)
            self.instruction = InstructionSource(tokenizer, [m.token_id for m in self.modalities])
            self.undos += self.instruction.install(model)
        self.undos += trim_tower(model, adapter, score_layer)
        base = adapter.base(model)
        if self.method.stage == "llm":
            self.llm = LlmPruner(
                adapter.language_model(model),
                self._llm_stages(config.stages(adapter.num_llm_layers(model))),
                lambda signals: self.method.select(config, signals),
                self.needs,
                adapter.visual_injections,
            )
            self.undos += self.llm.removers()
            for modality in self.modalities:
                self.undos.append(wrap(base, modality.encoder, functools.partial(self._encode_sources, modality.name)))
        else:
            if self.num_patches is not None:
                getattr(config, "check_fits", config.budget.check_fits)(self.num_patches)
            needs = self.needs
            for modality in self.modalities:
                if "vision_received" in needs:
                    target = adapter.vision_received(model, modality.name, score_layer)
                    # Fused qkv over packed images (Qwen2-VL), or q/k per view (SigLIP).
                    probe_class = ReceivedProbe if isinstance(target, VisionReceived) else ReceivedRowsProbe
                    received = probe_class(target)
                    self.probes[modality.name] = received
                    self.undos += received.removers()
                if needs & {"vision_cls_row", "vision_keys", "vision_cls_features"}:
                    probe = ClsRowProbe(
                        adapter.vision_attention(model, modality.name, score_layer),
                        keys="vision_keys" in needs,
                        cls_features="vision_cls_features" in needs,
                    )
                    self.probes[modality.name] = probe
                    self.undos += probe.removers()
                self.undos.append(wrap(base, modality.encoder, self._encoder_for(modality.name)))
            if not all(adapter.after_encoding(m.name) for m in self.modalities):
                projector = adapter.projector(model)
                self.undos.append(projector.register_forward_pre_hook(self._project_kept_only).remove)
                self.undos.append(projector.register_forward_hook(self._restore_rows).remove)
        self.undos.append(wrap(base, "forward", self._merge_forward))
        self.undos.append(wrap(model, "forward", self._top_forward))
        self.undos.append(wrap(model, "generate", self._generate))
        for name in ("generate_batch", "init_continuous_batching"):
            if hasattr(model, name):
                self.undos.append(wrap(model, name, refuse_continuous_batching))

    def _llm_stages(self, stages: LlmStages) -> LlmStages:
        """On models whose positions carry geometry (adapter positions="original", M-RoPE) tokens keep their ids in
        every stage too: a method's contiguous renumbering is dropped, and refused where it is the user's option."""
        if self.adapter.positions != "original" or not stages.contiguous:
            return stages
        if getattr(self.config, "positions", None) == "contiguous":
            raise ValueError(
                f"positions='contiguous' would renumber {type(self.model).__name__}'s (t, h, w) position ids; "
                "on this model kept tokens keep their original ids: use positions='original'"
            )
        return dataclasses.replace(stages, contiguous=False)

    def detach(self) -> None:
        for undo in reversed(self.undos):
            undo()
        self.undos.clear()

    # Vision side: score, select, project the kept patches only.

    def _encoder_for(self, modality: str) -> Callable[..., Any]:
        def encode(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return self._encode(modality, original, *args, **kwargs)

        return encode

    def _encode(self, modality: str, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        layer = kwargs.get("vision_feature_layer")
        if layer is not None and layer != self.model.config.vision_feature_layer:
            raise ValueError(
                f"vision_feature_layer={layer!r} differs from the one the model was pruned for "
                f"({self.model.config.vision_feature_layer}); unprune and prune again to change it"
            )
        probe = self.probes.get(modality)
        named = named_arguments(original, args, kwargs)
        self._candidates = self.adapter.candidates(self.model, modality, named)
        if self.instruction is not None:
            token = next(m.token_id for m in self.modalities if m.name == modality)
            self._instructions = self.instruction.for_views(self.adapter.items(self.model, modality, named), token)
        self._encoding, self._kept = modality, None
        if probe is not None:
            probe.arm()
        try:
            output = original(*args, **kwargs)
        finally:
            self._encoding = None
            if probe is not None:
                probe.disarm()
        if not hasattr(output, "pooler_output"):
            raise ValueError(f"{original.__name__} must be called with return_dict=True on a pruned model")
        if self.adapter.after_encoding(modality):
            attach_selections(output, self._select_encoded(modality, named, output.pooler_output, probe))
            return output
        kept, self._kept = self._kept, None
        rows, self._rows = self._rows, None
        if kept is None:
            raise RuntimeError(f"the projector did not run while encoding the {modality}, so nothing was selected")
        pooled = output.pooler_output
        if self.method.merges:
            made_rows, _ = rows
            selections = self.adapter.merged_selections(modality, pooled, kept, made_rows.shape[1])
        else:
            selections = self.adapter.selections(modality, pooled, kept)
        attach_selections(output, selections)
        return output

    def _encode_sources(self, modality: str, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """In-LLM methods: the encoder runs as stock; its rows' views and patches go with the features, for the
        report (which rows reach the last layer is known only after the LLM ran)."""
        output = original(*args, **kwargs)
        if not hasattr(output, "pooler_output"):
            raise ValueError(f"{original.__name__} must be called with return_dict=True on a pruned model")
        named = named_arguments(original, args, kwargs)
        sources = self.adapter.row_sources(self.model, modality, named, output.pooler_output)
        selections = [
            ImageSelection(
                rows=torch.arange(len(s), device=s.device), num_rows=len(s), views=[], view_sizes=sizes, sources=s
            )
            for s, sizes in sources
        ]
        attach_selections(output, selections)
        return output

    def _select_encoded(
        self, modality: str, inputs: dict[str, Any], pooled: Any, probe: ReceivedProbe | ClsRowProbe | None
    ) -> list[ImageSelection]:
        """Select per item (image or video) from the encoder's output: views differ in size between items.

        Each item's views (its frames) form one batch of equal views; the item's kept rows are its views' kept
        tokens, view after view, in raster order.
        """
        layout = self.adapter.encoded_layout(self.model, modality, inputs)
        scores = probe.scores if probe is not None else None
        if scores is not None:
            scores = self.adapter.merged_scores(self.model, modality, scores).flatten()
        if scores is not None and layout.order is not None:
            scores = torch.empty_like(scores).index_copy_(0, layout.order.to(scores.device), scores)
        if len(layout.items) != len(pooled):
            raise RuntimeError(f"the encoder returned {len(pooled)} items; their layout has {len(layout.items)}")
        selections, start = [], 0
        for (views, grid), features in zip(layout.items, pooled, strict=True):
            n = grid[0] * grid[1]
            if views * n + layout.extra != len(features):
                raise RuntimeError(
                    f"an item of {views} x {grid} tokens (+ {layout.extra}) came with {len(features)} features"
                )
            signals = ViewSignals(
                num_patches=n,
                num_views=views,
                grid=grid,
                received_attention=None if scores is None else scores[start : start + views * n].view(views, n),
                # The encoder's output rows are the LLM's input embeddings of these tokens (merged, or pooled).
                projected=features[: views * n].view(views, n, -1) if "projected_features" in self.needs else None,
            )
            kept = self.method.select(self.config, signals)
            offsets = torch.arange(views, device=kept.device).unsqueeze(1) * n
            always = torch.arange(views * n, views * n + layout.extra, device=kept.device)
            selections.append(
                ImageSelection(
                    rows=torch.cat([(kept + offsets).flatten(), always]).to(features.device),
                    num_rows=views * n + layout.extra,
                    views=list(kept),
                    view_sizes=[n] * views,
                )
            )
            start += views * n
        return selections

    def _project_kept_only(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._encoding is None or self.adapter.after_encoding(self._encoding):
            return None
        features = args[0]
        probe = self.probes.get(self._encoding)
        scores = probe.scores if probe is not None else None
        if scores is not None and tuple(scores.shape) != (features.shape[0], self.num_patches):
            raise RuntimeError(
                f"patch scores {tuple(scores.shape)} do not match projector input {tuple(features.shape)}"
            )
        # module.forward, not module(...): calling the projector would run this hook again.
        needs, patches = self.needs, self._patch_rows
        signals = ViewSignals(
            num_patches=self.num_patches,
            num_views=features.shape[0],
            grid=self.adapter.patch_grid(self.model),
            cls_attention=scores if probe is not None and probe.signal == "cls_attention" else None,
            received_attention=scores if probe is not None and probe.signal == "received_attention" else None,
            features=patches(self._encoding, features) if "vision_features" in needs else None,
            projected=patches(self._encoding, module.forward(features)) if "projected_features" in needs else None,
            keys=probe.keys if probe is not None else None,
            cls_features=probe.cls_features if probe is not None else None,
            candidates=self._candidates,
            instructions=self._instructions,
        )
        selected = self.method.select(self.config, signals)
        if isinstance(selected, Merged):
            self._kept, tokens = selected.kept, selected.tokens
            rows = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
            self._rows = (rows, features.shape[1])
            return (tokens, *args[1:])
        self._kept = selected
        rows = self.adapter.feature_rows(self._encoding, self._kept, features.shape[1])
        self._rows = None if rows.shape[1] == features.shape[1] else (rows, features.shape[1])
        if self._rows is None:
            return None
        return (features.gather(1, rows.unsqueeze(-1).expand(-1, -1, features.shape[-1])), *args[1:])

    def _patch_rows(self, modality: str, rows: torch.Tensor) -> torch.Tensor:
        """The patch rows of projector-input or -output features; a row too many would shift every index by one."""
        rows = self.adapter.patch_features(modality, rows)
        if rows.shape[1] != self.num_patches:
            raise RuntimeError(
                f"{modality} features hold {rows.shape[1]} patch rows per view, the model {self.num_patches} patches"
            )
        return rows

    def _restore_rows(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Give the encoder its usual (views, rows, dim) shape; dropped rows stay zero and never reach the LLM."""
        if self._encoding is None or self._rows is None or self.adapter.after_encoding(self._encoding):
            return None
        rows, num_rows = self._rows
        full = output.new_zeros(output.shape[0], num_rows, output.shape[-1])
        return full.scatter(1, rows.unsqueeze(-1).expand_as(output), output)

    # Sequence side: shorten the prefill, translate every decode step.

    def _merge_forward(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inputs = named_arguments(original, args, kwargs)
        cache = inputs.get("past_key_values")
        encoded = inputs.get("mm_encoder_outputs") or {}
        visual = any(k.startswith("pixel_values") and v is not None for k, v in inputs.items()) or any(
            encoded.get(m.name) is not None for m in self.modalities
        )
        if cache is not None and cache in self._plans and not visual:
            plan, llm_plans = self._plans[cache]
            if self._continuing is plan:  # generate() continuing the cache runs on its compact view already
                self._step_plans = ()
                return self._run(original, inputs, "decode", plans=llm_plans)
            return self._run(original, self._translate_step(inputs, cache, plan), "decode", plans=llm_plans)
        inputs = self.adapter.encode(self.adapter.base(self.model), inputs)
        encoded = inputs.get("mm_encoder_outputs") or {}
        input_ids = inputs.get("input_ids")
        present = [m for m in self.modalities if encoded.get(m.name) is not None]
        if present and input_ids is None:
            raise ValueError("a pruned model needs input_ids (not inputs_embeds) to find the image tokens")
        present = [m for m in present if bool((input_ids == m.token_id).any())]
        if not present:
            self._plan, self._step_plans = None, []
            self.report = self._unpruned_report(inputs, "no image tokens in this batch; it ran unpruned")
            return original(**inputs)
        check_cache(cache)
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                "a pruned prefill must start from an empty past_key_values (cache continuation is not supported)"
            )
        if self.llm is not None:
            return self._prefill_in_llm(original, inputs, cache, present)
        selections: dict[str, list[ImageSelection]] = {}
        for m in present:
            found = selections_of(encoded[m.name], (input_ids == m.token_id).sum(dim=1).tolist())
            if found is None:
                raise ValueError(f"mm_encoder_outputs[{m.name!r}] was not encoded by this pruned model; pass pixels")
            selections[m.name] = found
        plan = self._plan_for(input_ids, inputs.get("attention_mask"), present, selections)
        if not plan.identity:
            encoded = dict(encoded)
            for m in present:
                output = copy.copy(encoded[m.name])
                output.pooler_output = kept_rows(output.pooler_output, selections[m.name])
                for name in self.adapter.row_aligned_outputs:  # e.g. deepstack: one list of features per layer
                    setattr(output, name, [kept_rows(f, selections[m.name]) for f in getattr(output, name)])
                encoded[m.name] = output
            inputs["mm_encoder_outputs"] = encoded
            self._shorten_positions(inputs, plan)
            inputs["input_ids"] = plan.gather(input_ids, fill=self._pad_id())
            for name in PER_TOKEN_INPUTS:
                if inputs.get(name) is not None:
                    inputs[name] = plan.gather(inputs[name], fill=0)
            if inputs.get("attention_mask") is not None or not bool(plan.valid.all()):
                dtype = inputs["attention_mask"].dtype if inputs.get("attention_mask") is not None else torch.long
                inputs["attention_mask"] = plan.mask.to(dtype)
        output = original(**inputs)
        self._plan, self._step_plans = plan, [plan]
        self._remember(cache if cache is not None else getattr(output, "past_key_values", None), plan, [])
        self.report = self._pruned_report(input_ids, plan, present, selections)
        return output

    def _prefill_in_llm(
        self, original: Callable[..., Any], inputs: dict[str, Any], cache: Any, present: list[Modality]
    ) -> Any:
        """The sequence enters the LLM whole; the LLM stage shortens it at layer K."""
        input_ids = inputs["input_ids"]
        selections = {m.name: self._encoded_selections(inputs, m) for m in present}
        columns = torch.isin(input_ids, torch.tensor([m.token_id for m in present], device=input_ids.device))
        plan = Compaction.build(torch.ones_like(columns), inputs.get("attention_mask"))
        output = self._run(original, inputs, "prefill", columns=columns)
        self._plan, self._step_plans = plan, list(self.llm.plans)  # logits cover what reached the last layer
        self._remember(cache if cache is not None else getattr(output, "past_key_values", None), plan, self._step_plans)
        self.report = self._in_llm_report(input_ids, columns, plan, present, selections)
        return output

    def _encoded_selections(self, inputs: dict[str, Any], modality: Modality) -> list[ImageSelection]:
        placeholders = (inputs["input_ids"] == modality.token_id).sum(dim=1).tolist()
        found = selections_of(inputs["mm_encoder_outputs"][modality.name], placeholders)
        if found is None:
            raise ValueError(f"mm_encoder_outputs[{modality.name!r}] was not encoded by this pruned model; pass pixels")
        return found

    def _remember(self, cache: Any, plan: Compaction, llm_plans: list[Compaction]) -> None:
        if cache is not None:
            self._plans[cache] = (plan, llm_plans)

    def _run(
        self,
        original: Callable[..., Any],
        inputs: dict[str, Any],
        phase: str,
        columns: torch.Tensor | None = None,
        plans: list[Compaction] | None = None,
    ) -> Any:
        if self.llm is None:
            return original(**inputs)
        self.llm.begin(phase, columns=columns, plans=plans)
        try:
            return original(**inputs)
        finally:
            self.llm.begin(None)

    def _plan_for(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        present: list[Modality],
        selections: dict[str, list[ImageSelection]],
    ) -> Compaction:
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        for m in present:
            placeholders = input_ids == m.token_id
            rows = torch.cat([row_mask(s) for s in selections[m.name]]).to(input_ids.device)
            if rows.numel() != int(placeholders.sum()):
                raise ValueError(
                    f"{m.name} tokens and features do not match: {int(placeholders.sum())} {m.name} tokens in "
                    f"input_ids, {rows.numel()} feature rows from {len(selections[m.name])} {m.name} views"
                )
            keep[placeholders] = rows
        return Compaction.build(keep, attention_mask)

    def _shorten_positions(self, inputs: dict[str, Any], plan: Compaction) -> None:
        """Prefill positions for the shorter sequence, by the adapter's rule (see ModelAdapter.positions).

        "original": the stock full-sequence ids are gathered along with the kept tokens (computed here by the
        model's own rule when the caller passed none), and the model's stored rope deltas are set for the compact
        sequence, so a stock decode step that counts the compact mask lands on the original positions. A leading
        fourth row (transformers' M-RoPE convention: text positions, for masks only) is renumbered contiguously.
        """
        given = inputs.get("position_ids")
        if self.adapter.positions != "original":
            if given is not None:
                inputs["position_ids"] = plan.positions(given)
            return
        positions = self.adapter.full_positions(self.model, inputs) if given is None else given
        if positions.dim() == 2:
            positions = positions.unsqueeze(0)
        rope = positions[1:] if positions.shape[0] == 4 else positions
        if positions.shape[0] == 4:
            text = plan.positions(positions[0]).unsqueeze(0)
            inputs["position_ids"] = torch.cat([text, plan.kept_positions(rope)])
        else:
            inputs["position_ids"] = plan.kept_positions(positions)
        # The stock rule (get_rope_index): delta = largest position id + 1 - real tokens, here of the compact row.
        real = plan.mask.bool().to(rope.device)
        top = torch.where(real, plan.kept_positions(rope), torch.iinfo(rope.dtype).min).amax(dim=(0, 2))
        self.adapter.set_rope_deltas(self.model, (top + 1 - real.sum(dim=1)).unsqueeze(1))

    def _step_positions(self, positions: torch.Tensor, plan: Compaction) -> torch.Tensor:
        """A decode step's positions: the caller's, translated by the adapter's rule (see _shorten_positions)."""
        if self.adapter.positions != "original":
            return plan.decode_positions(positions)
        if positions.dim() == 3 and positions.shape[0] == 4:
            return torch.cat([plan.decode_positions(positions[0]).unsqueeze(0), positions[1:]])
        return positions

    def _translate_step(self, inputs: dict[str, Any], cache: Any, plan: Compaction) -> dict[str, Any]:
        query = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
        new_tokens = cache.get_seq_length() + query.shape[1] - plan.mask.shape[1]
        mask = inputs.get("attention_mask")
        if mask is not None and mask.shape[1] != plan.prefill_len + new_tokens:
            raise ValueError(
                f"attention_mask has {mask.shape[1]} columns; this decode step expects "
                f"{plan.prefill_len + new_tokens} (the caller's full prompt plus every token generated so far)"
            )
        inputs["attention_mask"] = plan.decode_mask(mask, new_tokens)
        if inputs.get("position_ids") is not None:
            inputs["position_ids"] = self._step_positions(inputs["position_ids"], plan)
        elif self.adapter.positions == "original":
            # transformers 5.23's M-RoPE models number a cached step from the whole 2-D mask (one id per mask
            # column, not per query): give the step its ids by the same rule, mask count + stored rope deltas.
            inputs["position_ids"] = self.adapter.step_positions(self.model, inputs["attention_mask"], query.shape[1])
        self._step_plans = []
        return inputs

    def _pad_id(self) -> int:
        """Filler for re-padded columns: the pad token, unless it doubles as a placeholder."""
        pad = self.model.config.get_text_config().pad_token_id
        return pad if pad is not None and pad not in {m.token_id for m in self.modalities} else 0

    def _generate(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        check_generate(self.model, kwargs, self.method_name if self.llm is not None else None)
        cache = kwargs.get("past_key_values")
        if self.llm is None and cache is not None and cache.get_seq_length() > 0:
            return self._continue(original, cache, *args, **kwargs)
        return original(*args, **kwargs)

    def _continue(self, original: Callable[..., Any], cache: Any, *args: Any, **kwargs: Any) -> Any:
        """generate() from a pruned prefill's returned cache, given the caller's whole text so far.

        generate() indexes input_ids by the cache's length, which holds the shortened prompt; so it gets the
        compact view (the prompt as the cache holds it, then the caller's later tokens), decode steps run on it as
        is, and the caller's own prompt goes back in front of the result, as stock generate returns it.
        """
        if cache not in self._plans:
            raise ValueError(
                f"past_key_values holds {cache.get_seq_length()} tokens but no pruned prefill of this model made it; "
                "generate() continues only a cache this pruned model returned"
            )
        plan, _ = self._plans[cache]
        inputs = named_arguments(original, args, kwargs)
        input_ids = inputs.pop("input_ids", None)
        if input_ids is None:
            input_ids = inputs.pop("inputs", None)
        if input_ids is None or input_ids.shape[1] < plan.prefill_len:
            raise ValueError(
                f"continuing from past_key_values needs input_ids with the whole text so far: the {plan.prefill_len}-"
                "token prompt the cache was built from, then every token generated since"
            )
        prompt, later = input_ids[:, : plan.prefill_len], input_ids[:, plan.prefill_len :]
        mask = inputs.get("attention_mask")
        tail = torch.ones_like(later) if mask is None else mask[:, plan.prefill_len :]
        inputs["attention_mask"] = torch.cat([plan.mask.to(tail.device, tail.dtype), tail], dim=1)
        compact = torch.cat([plan.gather(prompt, fill=self._pad_id()), later], dim=1)
        for name in PER_TOKEN_INPUTS:
            if inputs.get(name) is not None:
                values = inputs[name]
                inputs[name] = torch.cat(
                    [plan.gather(values[:, : plan.prefill_len], fill=0), values[:, plan.prefill_len :]], 1
                )
        self._continuing = plan
        try:
            output = original(input_ids=compact, **inputs)
        finally:
            self._continuing = None
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        rows = sequences.shape[0] // input_ids.shape[0]
        full = torch.cat([input_ids.repeat_interleave(rows, dim=0), sequences[:, compact.shape[1] :]], dim=1)
        if isinstance(output, torch.Tensor):
            return full
        output.sequences = full
        return output

    # Labels: the loss is the pruned model's, over the tokens that reached the LLM.

    def _top_forward(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inputs = named_arguments(original, args, kwargs)
        labels = inputs.pop("labels", None)
        # The stock forward's can_return_tuple: return_dict=False (passed or in the config) gives output.to_tuple().
        return_dict = inputs.pop("return_dict", None)
        if return_dict is None:
            return_dict = getattr(self.model.config, "return_dict", True)
        self._step_plans = []
        output = original(**inputs, return_dict=True)
        if labels is not None:
            labels = gather_through(self._step_plans, labels, fill=-100)
            extra = {k: v for k, v in inputs.items() if k not in fixed_parameters(original)}
            loss = self.model.loss_function(
                logits=output.logits, labels=labels, vocab_size=self.model.config.get_text_config().vocab_size, **extra
            )
            # Rebuilt rather than assigned: a ModelOutput keeps only fields set at construction as keys, and the
            # stock output (and its tuple) puts the loss first.
            output = type(output)(**{**output, "loss": loss})
        return output if return_dict else output.to_tuple()

    # Reports.

    def _pruned_report(
        self,
        input_ids: torch.Tensor,
        plan: Compaction,
        present: list[Modality],
        selections: dict[str, list[ImageSelection]],
    ) -> Report:
        kept: list[list[torch.Tensor]] = [[] for _ in range(input_ids.shape[0])]
        for m in present:
            per_sample = (input_ids == m.token_id).sum(dim=1).tolist()
            sample, filled = 0, 0
            for selection in selections[m.name]:
                while per_sample[sample] - filled < selection.num_rows:
                    sample, filled = sample + 1, 0
                kept[sample].extend(v.cpu() for v in selection.views)
                filled += selection.num_rows
        every = [s for m in present for s in selections[m.name]]
        lengths = plan.mask.sum(dim=1).tolist()
        return Report(
            method=self.method_name,
            kept_indices=kept,
            visual_tokens_in=sum(s.num_rows for s in every),
            visual_tokens_out=sum(len(s.rows) for s in every),
            merged_tokens=sum(s.merged for s in every),
            llm_input_lengths=lengths,
            seq_len_per_layer=[[n] * self.adapter.num_llm_layers(self.model) for n in lengths],
            applied=True,
            score=getattr(self.config, "score", None) or "",
        )

    def _in_llm_report(
        self,
        input_ids: torch.Tensor,
        columns: torch.Tensor,
        plan: Compaction,
        present: list[Modality],
        selections: dict[str, list[ImageSelection]],
    ) -> Report:
        """Per sample, per view (as the adapter lays the rows out), the patches whose tokens reach the last layer.

        The same meaning as the pre-LLM report: a sample's image views, then its frames; patch indices in the
        view's raster order. Tokens the method made (merged from pruned ones) count in visual_tokens_out and
        merged_tokens.
        """
        batch, length = columns.shape
        source = torch.arange(length, device=columns.device).expand(batch, length)
        survivors = gather_through(self.llm.plans, source, fill=-1)
        kept: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        for m in present:
            items = iter(selections[m.name])
            for b in range(batch):
                placeholders = (input_ids[b] == m.token_id).nonzero().squeeze(1)
                reached = torch.isin(placeholders, survivors[b][survivors[b] >= 0].to(placeholders.device))
                start = 0
                while start < len(placeholders):
                    item = next(items)
                    sources = item.sources.to(reached.device)
                    patches = sources[reached[start : start + item.num_rows] & (sources >= 0)]
                    size = item.view_sizes[0]
                    kept[b].extend(
                        (patches[patches // size == v] % size).sort().values.cpu() for v in range(len(item.view_sizes))
                    )
                    start += item.num_rows
        visual_out = int(self.llm.visual.sum())
        return Report(
            method=self.method_name,
            kept_indices=kept,
            visual_tokens_in=int(columns.sum()),
            visual_tokens_out=visual_out,
            merged_tokens=visual_out - sum(int(v.numel()) for views in kept for v in views),
            llm_input_lengths=plan.mask.sum(dim=1).tolist(),
            seq_len_per_layer=self.llm.seq_len_per_layer,
            applied=True,
        )

    def _unpruned_report(self, inputs: dict[str, Any], note: str) -> Report:
        query = inputs.get("input_ids") if inputs.get("input_ids") is not None else inputs.get("inputs_embeds")
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            lengths = mask.sum(dim=1).tolist()
        else:
            lengths = [query.shape[1]] * query.shape[0]
        return Report(method=self.method_name, kept_indices=[[] for _ in lengths], llm_input_lengths=lengths, note=note)
