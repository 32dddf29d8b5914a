"""What the runtime hands a method: the signals it declared it needs, for a batch of views."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ViewSignals:
    """A batch of views (images, crops or frames) that share one patch count.

    cls_attention: (views, num_patches), post-softmax [CLS] attention at the scoring layer, heads averaged;
    None unless the method declared the "vision_cls_row" need.
    """

    num_patches: int
    cls_attention: torch.Tensor | None = None

    def require_cls_attention(self, method: str) -> torch.Tensor:
        if self.cls_attention is None:
            raise RuntimeError(f"method {method!r} needs the vision [CLS] attention row, which was not computed")
        return self.cls_attention


@dataclass(frozen=True)
class LlmSignals:
    """What an in-LLM method sees at its scoring layer, per sample (samples hold different image counts).

    image_attention[b]: (n_image_b,) attention the sample's image tokens receive from the chosen queries,
    post-softmax over all real keys, averaged over heads (and queries), in sequence order.
    """

    image_attention: list[torch.Tensor]
