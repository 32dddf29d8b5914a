"""DART: keep the visual tokens least duplicated with a few pivot tokens, inside the LLM (arXiv 2502.11494).

Read from the reference (github.com/ZichenWen1/DART, llava/model/language_model/modeling_llama_self.py,
get_retained_image_token; scripts/v1_5/eval/*.sh for the defaults), written anew. Per sample, at layer K (2):
- states: the hidden states entering layer K passed through the language model's final norm;
- pivots: the 4 image tokens and the 4 text tokens after the image whose keys at layer K-1 (rotary embedding
  applied, heads concatenated) have the largest L1 norm;
- each pivot in turn takes, from the image tokens not yet taken (image pivots excluded), the `per_pivot` least
  cosine-similar to it; the kept set is the image pivots plus everything the pivots took, in raster order;
- no attention map is needed, so every layer keeps SDPA / FlashAttention; kept tokens keep their position ids.
The reference visits the pivots in the iteration order of a Python set of their sequence indices; so does this
code (with the indices of the unpadded sequence), since the order decides who takes a token two pivots want.

Budget: the reference's own knob is max_num_trunction M (128 in its scripts, 576 x (1 - 0.778));
per_pivot = M // (image pivots + text pivots), so it keeps image_pivots + 8 x per_pivot tokens, e.g. 132 for
M = 128. Here M is the sample's budget, round((1 - ratio) x n) or `tokens`: at 25/50/75/90/95 % of 576 DART
keeps 436/292/148/60/28. A budget of n or more keeps every token (ratio 0 is the stock model; a sample with
fewer image tokens than `tokens` keeps all it has), a budget of 0 none, and image pivots never outnumber it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastervlm.budget import Budget, check_count, normalize_budget, whole_number
from fastervlm.methods.signals import LlmSignals, LlmStages

DEFAULT_TOKENS = 128  # the reference scripts' max_num_trunction


@dataclass(frozen=True)
class DartConfig:
    """Prune image tokens once, at layer K, keeping those least duplicated with key-norm pivots.

    ratio / tokens: image tokens of a sample removed (fraction) or kept (count), all its images together; none
    given = 128 tokens, the reference's default. layer (K): layers < K see every token. image_pivots / text_pivots:
    pivots chosen by key L1 norm among the image tokens / the text tokens after the image (4 and 4).
    """

    ratio: float | None = None
    tokens: int | None = None
    layer: int = 2
    image_pivots: int = 4
    text_pivots: int = 4

    def __post_init__(self) -> None:
        normalize_budget(self)
        self.budget  # noqa: B018 - validates ratio / tokens
        layer = whole_number("layer", self.layer, "layers before it see every token")
        if layer < 1:
            raise ValueError(f"layer must be an int >= 1 (layers before it see every token), got {self.layer!r}")
        object.__setattr__(self, "layer", layer)
        for name in ("image_pivots", "text_pivots"):
            object.__setattr__(self, name, check_count(name, getattr(self, name), "pivot tokens"))
        if self.image_pivots + self.text_pivots == 0:
            raise ValueError("image_pivots + text_pivots must be >= 1: without pivots nothing can be chosen")

    @property
    def budget(self) -> Budget:
        if self.ratio is None and self.tokens is None:
            return Budget(None, DEFAULT_TOKENS)
        return Budget(self.ratio, self.tokens)

    def stages(self, num_layers: int) -> LlmStages:
        """One stage at layer K, scored with layer K-1's keys; text pivots come from the text after the image."""
        if not self.layer < num_layers:
            raise ValueError(
                f"layer must be in [1, {num_layers - 1}] for this {num_layers}-layer language model, got {self.layer}"
            )
        return LlmStages((self.layer,), queries="text", contiguous=False)


def select(config: DartConfig, signals: LlmSignals) -> list[torch.Tensor]:
    """Per sample: indices into its image tokens, ascending, of the pivots and what the pivots took."""
    return [
        kept_by_pivots(
            config,
            signals.visual_keys[b],
            signals.query_keys[b],
            signals.visual_normed[b],
            signals.query_normed[b],
            signals.visual_index[b],
            signals.query_index[b],
        )
        for b in range(len(signals.visual_keys))
    ]


def kept_by_pivots(
    config: DartConfig,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
    image_states: torch.Tensor,
    text_states: torch.Tensor,
    image_index: torch.Tensor,
    text_index: torch.Tensor,
) -> torch.Tensor:
    n = len(image_keys)
    budget = config.budget.kept_at_most(n)
    if budget >= n:
        return torch.arange(n, device=image_keys.device)
    if budget == 0:
        return torch.arange(0, device=image_keys.device)
    per_pivot = budget // (config.image_pivots + config.text_pivots)
    image_pivots = image_keys.float().abs().sum(dim=-1).topk(min(config.image_pivots, budget, n)).indices.tolist()
    text_pivots = text_keys.float().abs().sum(dim=-1).topk(min(config.text_pivots, len(text_keys))).indices.tolist()
    by_position = {int(image_index[i]): image_states[i] for i in image_pivots}
    by_position |= {int(text_index[j]): text_states[j] for j in text_pivots}
    taken = torch.zeros(n, dtype=torch.bool, device=image_keys.device)
    taken[image_pivots] = True
    kept = taken.clone()
    for position in list(set(by_position)):  # the reference's visiting order (see the module docstring)
        free = (~taken).nonzero().squeeze(1)
        if not len(free):
            break
        similarity = F.cosine_similarity(by_position[position].float().unsqueeze(0), image_states[free].float())
        chosen = free[(-similarity).topk(min(per_pivot, len(free))).indices]
        taken[chosen] = True
        kept[chosen] = True
    return kept.nonzero().squeeze(1)
