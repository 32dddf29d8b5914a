"""Attach a method to one model instance: hooks, wrappers, per-forward state, and every undo."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastervlm.methods import METHODS, MethodConfig, method_name
from fastervlm.methods.signals import ViewSignals
from fastervlm.models.base import SELECTION_ATTR, ImageSelection, ModelAdapter
from fastervlm.report import Report
from fastervlm.runtime.probe import ClsRowProbe
from fastervlm.runtime.sequence import Compaction
from fastervlm.runtime.wrap import wrap


def named_arguments(function: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every argument by name (var-keyword ones flattened), so a wrapper can rewrite any of them."""
    signature = inspect.signature(function)
    bound = signature.bind(*args, **kwargs).arguments
    flat: dict[str, Any] = {}
    for name, value in bound.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            flat.update(value)
        else:
            flat[name] = value
    return flat


def row_mask(selection: ImageSelection) -> torch.Tensor:
    mask = torch.zeros(selection.num_rows, dtype=torch.bool, device=selection.rows.device)
    mask[selection.rows] = True
    return mask


class Installation:
    """Everything prune() changed on one model, and the state of its most recent pruned prefill."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, config: MethodConfig) -> None:
        self.model, self.adapter, self.config = model, adapter, config
        self.method_name = method_name(config)
        self.method = METHODS[self.method_name]
        self.num_patches = adapter.patches_per_view(model)
        self.report: Report | None = None
        self.undos: list[Callable[[], None]] = []
        self.probe: ClsRowProbe | None = None
        self._encoding = False
        self._kept: torch.Tensor | None = None
        self._plan: Compaction | None = None  # of the last pruned prefill, used by its decode steps
        self._cache: object | None = None  # the KV cache that prefill filled
        self._step_plan: Compaction | None = None  # of the current forward call, for its labels

    @classmethod
    def attach(cls, model: nn.Module, adapter: ModelAdapter, config: MethodConfig) -> Installation:
        self = cls(model, adapter, config)
        score_layer = getattr(config, "score_layer", None)
        adapter.check(model, self.method.needs, score_layer)
        config.budget.check_fits(self.num_patches)
        if "vision_cls_row" in self.method.needs:
            self.probe = ClsRowProbe(adapter.vision_attention(model, score_layer))
            self.undos += self.probe.removers()
        projector = adapter.projector(model)
        self.undos.append(projector.register_forward_pre_hook(self._project_kept_only).remove)
        self.undos.append(projector.register_forward_hook(self._restore_rows).remove)
        base = adapter.base(model)
        self.undos.append(wrap(base, "get_image_features", self._encode_images))
        self.undos.append(wrap(base, "forward", self._merge_forward))
        self.undos.append(wrap(model, "forward", self._top_forward))
        return self

    def detach(self) -> None:
        for undo in reversed(self.undos):
            undo()
        self.undos.clear()

    # Vision side: score, select, project the kept patches only.

    def _encode_images(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        layer = kwargs.get("vision_feature_layer")
        if layer is not None and layer != self.model.config.vision_feature_layer:
            raise ValueError(
                f"vision_feature_layer={layer!r} differs from the one the model was pruned for "
                f"({self.model.config.vision_feature_layer}); unprune and prune again to change it"
            )
        self._encoding, self._kept = True, None
        if self.probe is not None:
            self.probe.arm()
        try:
            output = original(*args, **kwargs)
        finally:
            self._encoding = False
            if self.probe is not None:
                self.probe.disarm()
        kept, self._kept = self._kept, None
        if kept is None:
            raise RuntimeError("the projector did not run while encoding images, so nothing was selected")
        if not hasattr(output, "pooler_output"):
            raise ValueError("get_image_features must be called with return_dict=True on a pruned model")
        for features, selection in zip(
            output.pooler_output, self.adapter.selections(output.pooler_output, kept, self.num_patches), strict=True
        ):
            setattr(features, SELECTION_ATTR, selection)
        return output

    def _project_kept_only(self, module: nn.Module, args: tuple) -> tuple | None:
        if not self._encoding:
            return None
        features = args[0]
        views, num_patches = features.shape[:2]
        scores = self.probe.scores if self.probe is not None else None
        if scores is not None and tuple(scores.shape) != (views, num_patches):
            raise RuntimeError(
                f"[CLS] scores {tuple(scores.shape)} do not match projector input {tuple(features.shape)}"
            )
        self._kept = self.method.select(self.config, ViewSignals(num_patches=num_patches, cls_attention=scores))
        if self._kept.shape[1] == num_patches:
            return None
        index = self._kept.unsqueeze(-1).expand(-1, -1, features.shape[-1])
        return (features.gather(1, index), *args[1:])

    def _restore_rows(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Give get_image_features its usual (views, N, dim) shape; dropped rows stay zero and never reach the LLM."""
        if not self._encoding or self._kept.shape[1] == self.num_patches:
            return None
        full = output.new_zeros(output.shape[0], self.num_patches, output.shape[-1])
        return full.scatter(1, self._kept.unsqueeze(-1).expand_as(output), output)

    # Sequence side: shorten the prefill, translate every decode step.

    def _merge_forward(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inputs = named_arguments(original, args, kwargs)
        cache = inputs.get("past_key_values")
        visual = inputs.get("pixel_values") is not None or (inputs.get("mm_encoder_outputs") or {}).get("image")
        if self._plan is not None and cache is not None and cache is self._cache and not visual:
            return original(**self._translate_step(inputs, cache))
        inputs = self.adapter.encode(self.adapter.base(self.model), inputs)
        image = (inputs.get("mm_encoder_outputs") or {}).get("image")
        input_ids = inputs.get("input_ids")
        token_id = self.adapter.image_token_id(self.model)
        if image is None or input_ids is None or not bool((input_ids == token_id).any()):
            if image is not None and input_ids is None:
                raise ValueError("a pruned model needs input_ids (not inputs_embeds) to find the image tokens")
            self._plan = self._cache = self._step_plan = None
            self.report = self._unpruned_report(inputs, "no image tokens in this batch; it ran unpruned")
            return original(**inputs)
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                "a pruned prefill must start from an empty past_key_values (cache continuation is not supported)"
            )
        selections = [getattr(features, SELECTION_ATTR, None) for features in image.pooler_output]
        if any(s is None for s in selections):
            raise ValueError("mm_encoder_outputs were not encoded by this pruned model; pass pixel_values instead")
        plan = self._plan_for(input_ids, inputs.get("attention_mask"), selections)
        if not plan.identity:
            image = copy.copy(image)
            image.pooler_output = [
                f.index_select(0, s.rows) for f, s in zip(image.pooler_output, selections, strict=True)
            ]
            inputs["mm_encoder_outputs"] = {**inputs["mm_encoder_outputs"], "image": image}
            inputs["input_ids"] = plan.gather(input_ids, fill=self._pad_id(token_id))
            if inputs.get("position_ids") is not None:
                inputs["position_ids"] = plan.positions(inputs["position_ids"])
            if inputs.get("attention_mask") is not None or not bool(plan.valid.all()):
                dtype = inputs["attention_mask"].dtype if inputs.get("attention_mask") is not None else torch.long
                inputs["attention_mask"] = plan.mask.to(dtype)
        output = original(**inputs)
        self._plan, self._step_plan = plan, plan
        self._cache = cache if cache is not None else getattr(output, "past_key_values", None)
        self.report = self._pruned_report(input_ids, token_id, plan, selections)
        return output

    def _plan_for(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, selections: list[ImageSelection]
    ) -> Compaction:
        placeholders = input_ids == self.adapter.image_token_id(self.model)
        rows = torch.cat([row_mask(s) for s in selections]).to(input_ids.device)
        if rows.numel() != int(placeholders.sum()):
            raise ValueError(
                f"image tokens and features do not match: {int(placeholders.sum())} image tokens in input_ids, "
                f"{rows.numel()} feature rows from {len(selections)} images"
            )
        keep = ~placeholders
        keep[placeholders] = rows
        return Compaction.build(keep, attention_mask)

    def _translate_step(self, inputs: dict[str, Any], cache: Any) -> dict[str, Any]:
        plan = self._plan
        query = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
        new_tokens = cache.get_seq_length() + query.shape[1] - plan.mask.shape[1]
        mask = inputs.get("attention_mask")
        if mask is not None and mask.shape[1] != plan.prefill_len + new_tokens:
            raise ValueError(
                f"attention_mask has {mask.shape[1]} columns; this decode step expects {plan.prefill_len + new_tokens} "
                "(the caller's full prompt plus every token generated so far)"
            )
        inputs["attention_mask"] = plan.decode_mask(mask, new_tokens)
        if inputs.get("position_ids") is not None:
            inputs["position_ids"] = plan.decode_positions(inputs["position_ids"])
        self._step_plan = None
        return inputs

    def _pad_id(self, image_token_id: int) -> int:
        pad = self.model.config.get_text_config().pad_token_id
        return pad if pad is not None and pad != image_token_id else 0

    # Labels: the loss is the pruned model's, over the tokens that reached the LLM.

    def _top_forward(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inputs = named_arguments(original, args, kwargs)
        labels = inputs.pop("labels", None)
        self._step_plan = None
        output = original(**inputs)
        if labels is not None:
            plan = self._step_plan
            labels = plan.gather(labels.to(plan.index.device), fill=-100) if plan is not None else labels
            extra = {k: v for k, v in inputs.items() if k not in named_arguments_names(original)}
            output.loss = self.model.loss_function(
                logits=output.logits, labels=labels, vocab_size=self.model.config.get_text_config().vocab_size, **extra
            )
        return output

    # Reports.

    def _pruned_report(
        self, input_ids: torch.Tensor, token_id: int, plan: Compaction, selections: list[ImageSelection]
    ) -> Report:
        per_sample = (input_ids == token_id).sum(dim=1).tolist()
        kept: list[list[torch.Tensor]] = [[] for _ in per_sample]
        sample, filled = 0, 0
        for selection in selections:
            while per_sample[sample] - filled < selection.num_rows:
                sample, filled = sample + 1, 0
            kept[sample].extend(v.cpu() for v in selection.views)
            filled += selection.num_rows
        return Report(
            method=self.method_name,
            kept_indices=kept,
            visual_tokens_in=sum(s.num_rows for s in selections),
            visual_tokens_out=sum(len(s.rows) for s in selections),
            llm_input_lengths=plan.mask.sum(dim=1).tolist(),
            applied=True,
        )

    def _unpruned_report(self, inputs: dict[str, Any], note: str) -> Report:
        query = inputs.get("input_ids") if inputs.get("input_ids") is not None else inputs.get("inputs_embeds")
        mask = inputs.get("attention_mask")
        lengths = (
            mask.sum(dim=1).tolist() if mask is not None and mask.dim() == 2 else [query.shape[1]] * query.shape[0]
        )
        return Report(method=self.method_name, kept_indices=[[] for _ in lengths], llm_input_lengths=lengths, note=note)


def named_arguments_names(function: Callable[..., Any]) -> set[str]:
    return {
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    }
