"""vLLM's `vllm.general_plugins` entry point: names the pruned architectures, imports nothing heavy.

vLLM calls register() in every process it starts, before it resolves a model's architecture; the classes are
given as "module:class" strings so they load only when a server asks for them.
"""

from __future__ import annotations

ARCHITECTURES = {
    "FasterVLMLlavaForConditionalGeneration": "fastervlm.serving.vllm_llava:FasterVLMLlavaForConditionalGeneration"
}


def register() -> None:
    from vllm import ModelRegistry

    for name, target in ARCHITECTURES.items():
        if name not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(name, target)
