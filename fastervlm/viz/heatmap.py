"""The vision [CLS] attention FasterVLM ranks patches by, read from one unpruned forward for drawing."""

from __future__ import annotations

import torch
from torch import nn

from fastervlm.models import adapter_for
from fastervlm.runtime.probe import ClsRowProbe


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
