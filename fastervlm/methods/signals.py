"""What the runtime hands a method: the signals it declared it needs, for a batch of views."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ViewSignals:
    """A batch of views (images, crops or frames) that share one patch count.

    Each field is None unless the method declared the need named beside it:
    cls_attention ("vision_cls_row"): (views, N) post-softmax [CLS] attention at the scoring layer, heads averaged.
    features ("vision_features"): (views, N, dim) the patches the projector would see.
    keys ("vision_keys"): (views, 1 + N, head_dim) keys at the scoring layer averaged over heads, [CLS] first.
    cls_features ("vision_cls_features"): (views, dim) the [CLS] token's hidden state at the feature layer.
    candidates: (views, N) bool, the patches the model's layout can carry to the LLM (LLaVA-NeXT's unpadding cuts
    some crop patches); None when all can. A method picks among them first, so a view keeps k that arrive.
    """

    num_patches: int
    num_views: int = 1
    grid: tuple[int, int] = (0, 0)
    cls_attention: torch.Tensor | None = None
    features: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    cls_features: torch.Tensor | None = None
    candidates: torch.Tensor | None = None

    def among_candidates(self, priority: torch.Tensor) -> torch.Tensor:
        """Priorities with the patches the layout would cut pushed below every candidate."""
        if self.candidates is None:
            return priority
        return priority.float().masked_fill(~self.candidates.to(priority.device), float("-inf"))

    def require_cls_attention(self, method: str) -> torch.Tensor:
        return self.require("cls_attention", method)

    def require(self, name: str, method: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"method {method!r} needs the signal {name!r}, which was not computed")
        return value


@dataclass(frozen=True)
class Merged:
    """A selection that also makes new tokens: `tokens` replace the N patches as the projector's input.

    kept: (views, k) patch indices carried over unchanged (for the report); tokens: (views, r, dim), r >= k,
    in the order the LLM will see them.
    """

    kept: torch.Tensor
    tokens: torch.Tensor


@dataclass(frozen=True)
class LlmSignals:
    """What an in-LLM method sees at its scoring layer, per sample (samples hold different image counts).

    image_attention[b]: (n_image_b,) attention the sample's image tokens receive from the chosen queries,
    post-softmax over all real keys, averaged over heads (and queries), in sequence order.
    """

    image_attention: list[torch.Tensor]
