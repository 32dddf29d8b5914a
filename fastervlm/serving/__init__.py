"""Serving pruned models with vLLM: the pure plan here, the vLLM model classes in `vllm_llava` (needs vLLM)."""
