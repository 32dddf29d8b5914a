"""The generate() modes a pruned model supports, checked at entry: an unsupported one fails with its reason.

The runtime shortens the prefill and translates every later step against a DynamicCache that grows one call at a
time. Modes that preallocate or page the cache (static, offloaded, sliding-window, quantized caches, continuous
batching), feed the prefill in chunks, or re-run the prompt at every step would otherwise fail deep inside the
model (a gather error) or, worse, select other tokens than the cached run does.
"""

from __future__ import annotations

from typing import Any, NoReturn

from torch import nn
from transformers import DynamicCache

DYNAMIC = (None, "dynamic")


def generation_option(model: nn.Module, kwargs: dict[str, Any], name: str) -> Any:
    """A generation option as generate() will see it: a keyword, else the passed or the model's generation_config."""
    if name in kwargs:
        return kwargs[name]
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    return getattr(config, name, None)


def check_cache(cache: Any) -> None:
    if cache is not None and type(cache) is not DynamicCache:
        raise ValueError(
            f"past_key_values={type(cache).__name__} is not supported on a pruned model; pass a DynamicCache or none"
        )


def check_generate(model: nn.Module, kwargs: dict[str, Any], in_llm: str | None) -> None:
    """Refuse a generate() call the pruned model cannot run exactly; in_llm: the method's name if it prunes inside
    the language model (its selection depends on the prompt's last token, so it must happen once, at prefill)."""
    cache_implementation = generation_option(model, kwargs, "cache_implementation")
    if cache_implementation not in DYNAMIC:
        raise ValueError(
            f"cache_implementation={cache_implementation!r} is not supported on a pruned model (its prefill is "
            "shortened per sample, which a preallocated, offloaded or quantized cache cannot hold); use the default "
            "dynamic cache: cache_implementation=None or 'dynamic'"
        )
    check_cache(kwargs.get("past_key_values"))
    if generation_option(model, kwargs, "prefill_chunk_size"):
        raise ValueError(
            "prefill_chunk_size is not supported on a pruned model: the prefill is pruned as a whole (the image "
            "tokens must arrive in one forward); leave it unset"
        )
    attention = getattr(model.config, "_attn_implementation", None) or ""
    if attention.startswith("paged"):
        raise ValueError(f"attn_implementation={attention!r} (paged attention) is not supported on a pruned model")
    if in_llm is None:
        return
    if generation_option(model, kwargs, "use_cache") is False:
        raise ValueError(
            f"use_cache=False is not supported with {in_llm!r}: it selects the image tokens once, from the prompt, at "
            "prefill; without a cache every step would be a new prefill and select again from the latest token"
        )
    assisted = [
        name
        for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")
        if generation_option(model, kwargs, name)
    ]
    if assisted:
        raise ValueError(
            f"assisted generation ({', '.join(assisted)}) is not supported with {in_llm!r}: its first forward holds "
            "the prompt and draft tokens together, so the selection would score from a draft token"
        )


def refuse_continuous_batching(original: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise ValueError(
        f"{original.__name__} (continuous batching, paged attention) is not supported on a pruned model; use generate()"
    )
