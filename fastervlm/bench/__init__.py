"""Benchmarks: prefill FLOPs and KV cache of the full-size architectures (and, later, measured latency)."""
