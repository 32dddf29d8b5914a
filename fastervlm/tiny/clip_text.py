"""A tiny random CLIP (text tower, text and visual projections) saved as a local checkpoint, for CDPruner offline.

CDPruner loads the CLIP matching the vision tower by name (`from_pretrained`); tests and demos point that same
code at this stand-in's directory, so nothing is downloaded. Its text positions are few (16), so a longer
instruction exercises the reference's split into several text segments.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

SPECIALS = ("<|startoftext|>", "<|endoftext|>")  # CLIP's; the end token's id must not be 2 (transformers' legacy path)
TEXT_POSITIONS = 16
PROJECTION = 16  # given to each tower's config too: CLIP*ModelWithProjection read it from there


def tiny_clip_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level, one token per byte, each text wrapped in start / end tokens as CLIP's tokenizer does."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate((*SPECIALS, *alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIALS[1]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A {SPECIALS[1]}", special_tokens=[(s, vocab[s]) for s in SPECIALS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIALS[0], eos_token=SPECIALS[1], unk_token=SPECIALS[1]
    )


def save_tiny_clip(directory: str | Path, vision_hidden: int = 32, seed: int = 0) -> Path:
    """A tiny CLIP whose vision width matches the tiny LLaVA towers' (its projection reads their features)."""
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_POSITIONS,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": 0,
            "projection_dim": PROJECTION,
        },
        vision_config={
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "projection_dim": PROJECTION,
        },
        projection_dim=PROJECTION,
    )
    torch.manual_seed(seed)
    directory = Path(directory)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@functools.cache
def tiny_cdpruner_options() -> dict[str, str]:
    """CDPruner's by-name loads (text_tower, tokenizer) pointed at stand-ins saved once per process.

    The tokenizer is the tiny LLaVA's, which every tiny family's text ids share.
    """
    from fastervlm.tiny.llava import tiny_tokenizer

    root = Path(tempfile.mkdtemp(prefix="fastervlm-tiny-clip-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tiny_tokenizer().save_pretrained(root / "llm")
    return {"text_tower": str(save_tiny_clip(root / "clip")), "tokenizer": str(root / "llm")}


def tiny_method_options(method: str) -> dict[str, str]:
    """What a method loads by name, pointed at tiny stand-ins, for runs on the embedded tiny models."""
    return tiny_cdpruner_options() if method == "cdpruner" else {}
