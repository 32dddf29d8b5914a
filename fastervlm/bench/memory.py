"""Peak memory of one measured step: CUDA's allocator peak, or the process's peak resident set on Linux CPUs.

torch does not track host allocations, so the CPU figure is the kernel's VmHWM (peak RSS: weights, activations,
the Python process), reset before each step by writing "5" to /proc/self/clear_refs (Linux >= 4.0), after
glibc's malloc_trim has handed freed heap back (else a big earlier step would set every later step's floor).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import torch

CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def cpu_peak_supported() -> bool:
    return CLEAR_REFS.exists() and STATUS.exists()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif cpu_peak_supported():
        libc = ctypes.util.find_library("c")
        if libc is not None and hasattr(ctypes.CDLL(libc), "malloc_trim"):
            ctypes.CDLL(libc).malloc_trim(0)
        CLEAR_REFS.write_text("5")


def peak_mb(device: torch.device) -> float | None:
    """The peak since the last reset_peak, MiB; None on a CPU without /proc (not Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if not cpu_peak_supported():
        return None
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
