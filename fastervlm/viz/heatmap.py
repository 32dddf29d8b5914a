"""The patch scores FasterVLM ranks by ([CLS] attention, or the received-attention proxy), read for drawing."""

from __future__ import annotations

import torch
from torch import nn

from fastervlm.models import adapter_for
from fastervlm.models.base import VisionReceived
from fastervlm.runtime.probe import ClsRowProbe, ReceivedProbe, ReceivedRowsProbe


def cls_attention(model: nn.Module, inputs: dict, modality: str = "image") -> torch.Tensor:
    """(views, N) post-softmax [CLS] attention to the patches, at the layer the model takes its features from.

    The same row fastervlm scores (ClsRowProbe on q_proj / k_proj outputs), so the heatmap is what the method
    ranked, with the model's attention kernel left alone. Views: the batch's images, crops or frames in order.
    """
    if getattr(model, "_fastervlm", None) is not None:
        raise ValueError("model is pruned; call fastervlm.unprune(model) first so the heatmap sees every patch")
    probe = ClsRowProbe(adapter_for(model).vision_attention(model, modality, None))
    probe.arm()
    try:
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)  # the [CLS] row is the point, not the logits
    finally:
        probe.disarm()
        for remove in probe.removers():
            remove()
    if probe.scores is None:
        raise RuntimeError(f"the vision tower did not run for modality {modality!r}; do the inputs hold its pixels?")
    return probe.scores.float().cpu()


def received_attention(model: nn.Module, inputs: dict, modality: str = "image") -> list[torch.Tensor]:
    """Per image, the "received attention" score fastervlm ranks by on towers without [CLS] (score="received").

    Qwen-VL: one (rows, cols) map per image over its merged tokens, in raster order; LLaVA-OneVision: one (views, N)
    tensor per batch. Read with the runtime's own probes from one unpruned forward, the kernel left alone.
    """
    if getattr(model, "_fastervlm", None) is not None:
        raise ValueError("model is pruned; call fastervlm.unprune(model) first so the heatmap sees every patch")
    adapter = adapter_for(model)
    target = adapter.vision_received(model, modality, None)
    probe = ReceivedProbe(target) if isinstance(target, VisionReceived) else ReceivedRowsProbe(target)
    probe.arm()
    try:
        with torch.no_grad():
            model(**inputs, logits_to_keep=1)
    finally:
        probe.disarm()
        for remove in probe.removers():
            remove()
    if probe.scores is None:
        raise RuntimeError(f"the vision tower did not run for modality {modality!r}; do the inputs hold its pixels?")
    scores = probe.scores.float().cpu()
    if not adapter.selects_after_encoding:
        return [scores]
    layout = adapter.encoded_layout(model, modality, {"grid_thw": inputs[f"{modality}_grid_thw"].cpu()})
    if layout.order is not None:
        scores = torch.empty_like(scores).index_copy_(0, layout.order, scores)
    sizes = [views * rows * cols for views, (rows, cols) in layout.items]
    return [s.view(-1, *grid)[0] for s, (_, grid) in zip(scores.split(sizes), layout.items, strict=True)]
