"""The one mechanism that shortens sequences and keeps generate, masks, positions and the KV cache right."""
