"""CDPruner: a conditional DPP over the visual tokens, conditioned on the instruction (NeurIPS 2025, arXiv 2506.10967).

The rule is read from Theia-4869/CDPruner (`encode_images` in llava/model/llava_arch.py, the text tower in
llava/model/multimodal_encoder/clip_encoder.py) and written anew.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from fastervlm.budget import Budget
from fastervlm.methods.signals import ViewSignals

REFERENCE_TOWER = "openai/clip-vit-large-patch14-336"  # LLaVA-1.5's and LLaVA-NeXT's vision tower
ANSWER_FORMAT = "\nAnswer the question using a single word or phrase."  # the reference strips it from questions


@dataclass(frozen=True)
class CDPrunerConfig:
    """Keep the k visual tokens of a view that a DPP finds most diverse, conditioned on their relevance to the text.

    ratio / tokens: the budget k per view (the reference's `--visual_token_num` is tokens=k; its LLaVA-NeXT runs
    give each of the 5 views the same k). Kernel L = diag(r) S diag(r): S the cosine similarity of the projected
    tokens, r each token's relevance, the mean over text segments of minus the cosine between the token's CLIP
    image embedding (vision post-norm, then CLIP's visual projection, on the projector-input features) and the
    instruction's CLIP text embedding, min-max normalised per view (+1e-6). Greedy MAP inference (Chen et al. 2018)
    picks k tokens. text_tower: the CLIP checkpoint (hub id or directory) whose text tower, projections and
    post-norm match the vision tower. tokenizer: the language model's tokenizer that decodes the instruction from
    input_ids (None: the model's own name_or_path). remove: strings cut from the instruction (the Vicuna and Mistral
    chat templates' answer cues; the benchmark line the reference strips).
    """

    ratio: float | None = 0.9
    tokens: int | None = None
    text_tower: str = REFERENCE_TOWER
    tokenizer: str | None = None
    remove: tuple[str, ...] = (ANSWER_FORMAT, "ASSISTANT:", "[/INST]")

    def __post_init__(self) -> None:
        Budget(self.ratio, self.tokens)
        if not isinstance(self.text_tower, str) or not self.text_tower:
            raise ValueError(f"text_tower must be a CLIP checkpoint's hub id or directory, got {self.text_tower!r}")
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            raise ValueError(f"tokenizer must be a hub id or directory, or None (the model's), got {self.tokenizer!r}")
        if isinstance(self.remove, str) or not all(isinstance(r, str) for r in self.remove):
            raise ValueError(f"remove must be a list of strings, got {self.remove!r}")
        object.__setattr__(self, "remove", tuple(self.remove))  # a YAML list becomes the hashable tuple

    @property
    def budget(self) -> Budget:
        return Budget(self.ratio, self.tokens)


class RelevanceTower(NamedTuple):
    tokenizer: Any
    text: nn.Module  # CLIP's text transformer; its pooled output through text_projection is the text embedding
    text_projection: nn.Module
    post_norm: nn.Module  # the vision tower's post_layernorm
    visual_projection: nn.Module


@functools.cache
def relevance_tower(name: str, device: str) -> RelevanceTower:
    """Loaded once per process and device, fp32; of the vision model only the head is kept."""
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(name).eval()
    return RelevanceTower(
        AutoTokenizer.from_pretrained(name),
        clip.text_model.to(device),
        clip.text_projection.to(device),
        clip.vision_model.post_layernorm.to(device),
        clip.visual_projection.to(device),
    )


def text_embeds(tower: RelevanceTower, text: str) -> torch.Tensor:
    """(segments, dim): the tokens, zero-padded to a multiple of the text positions, one embedding per segment."""
    positions = tower.text.config.max_position_embeddings
    inputs = tower.tokenizer(text=text, return_tensors="pt")
    length = inputs["input_ids"].shape[1]
    padding = positions * ((length - 1) // positions + 1) - length
    device = tower.text_projection.weight.device
    segments = {
        key: torch.cat([inputs[key], inputs[key].new_zeros(1, padding)], dim=1).view(-1, positions).to(device)
        for key in ("input_ids", "attention_mask")
    }
    with torch.no_grad():
        return tower.text_projection(tower.text(**segments).pooler_output)


def relevance(config: CDPrunerConfig, views: ViewSignals) -> torch.Tensor:
    """(views, N) in (0, 1]: how little each token's CLIP embedding agrees with its view's instruction."""
    features = views.require("features", "cdpruner").float()
    texts = views.instructions
    if texts is None:
        raise RuntimeError("method 'cdpruner' needs the signal 'instructions', which was not computed")
    tower = relevance_tower(config.text_tower, str(features.device))
    with torch.no_grad():
        images = tower.visual_projection(tower.post_norm(features))
    images = images / images.norm(dim=-1, keepdim=True)
    cleaned = [functools.reduce(lambda t, cut: t.replace(cut, ""), config.remove, text).strip() for text in texts]
    embeds = {text: text_embeds(tower, text) for text in set(cleaned)}
    out = []
    for image, text in zip(images, cleaned, strict=True):
        t = embeds[text] / embeds[text].norm(dim=-1, keepdim=True)
        r = (-(image @ t.T)).mean(dim=-1)
        out.append((r - r.min() + 1e-6) / (r.max() - r.min()))
    return torch.stack(out)


def select(config: CDPrunerConfig, views: ViewSignals) -> torch.Tensor:
    """Kept patch indices per view, (views, k), ascending."""
    projected = views.require("projected", "cdpruner").float()
    k = config.budget.kept(views.num_patches)
    usable = views.candidates if views.candidates is not None else torch.ones(projected.shape[:2], dtype=torch.bool)
    usable = usable.to(projected.device)
    full = [k >= int(u.sum()) for u in usable]  # every token the layout carries fits (ratio 0, say): nothing to pick
    if all(full):
        return torch.stack([fill(u.new_empty(0, dtype=torch.long), k, u) for u in usable]).sort(dim=-1).values
    normed = projected / projected.norm(dim=-1, keepdim=True)
    r = relevance(config, views)
    kernel = r.unsqueeze(2) * (normed @ normed.transpose(1, 2)) * r.unsqueeze(1)
    picks = [
        fill(kv.new_empty(0, dtype=torch.long), k, u) if f else greedy_map(kv, k, u)
        for kv, u, f in zip(kernel, usable, full, strict=True)
    ]
    return torch.stack(picks).sort(dim=-1).values


def fill(picks: torch.Tensor, k: int, usable: torch.Tensor) -> torch.Tensor:
    """picks, then unpicked usable tokens, then the others, in raster order, up to k."""
    rest = torch.ones_like(usable)
    rest[picks] = False
    return torch.cat([picks, (rest & usable).nonzero().squeeze(1), (rest & ~usable).nonzero().squeeze(1)])[:k]


def greedy_map(kernel: torch.Tensor, k: int, usable: torch.Tensor) -> torch.Tensor:
    """Fast greedy MAP inference of a DPP (Chen et al., NeurIPS 2018), as the reference runs it: k indices.

    Each step takes the token with the largest remaining marginal gain d_j^2 and updates every d_i^2 through the
    incremental Cholesky row e = (L_j - c_j . C) / d_j. Tokens the layout cuts start at -inf. Once no gain is
    positive (the kernel's rank, at most the projected width, is used up; the reference divides by zero there),
    the rest are filled in raster order.
    """
    cis = kernel.new_zeros(k, kernel.shape[0])
    di2s = kernel.diagonal().clone().masked_fill(~usable, float("-inf"))
    picks = torch.empty(k, dtype=torch.long, device=kernel.device)
    for i in range(k):
        j = int(di2s.argmax())
        if not di2s[j] > 0:
            return fill(picks[:i], k, usable)
        picks[i] = j
        eis = (kernel[j] - cis[:i, j] @ cis[:i]) / di2s[j].sqrt()
        cis[i] = eis
        di2s -= eis.square()
        di2s[j] = float("-inf")
    return picks
