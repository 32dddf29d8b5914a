"""Skip the vision layers whose output no feature needs: the tower stops at the feature layer.

LLaVA-style models take their features from `hidden_states[vision_feature_layer]` (-2 for LLaVA-1.5/NeXT and
Video-LLaVA), yet the stock tower runs every layer after it too (vLLM builds the tower only up to it). While a
modality encoder of the model runs, each such layer hands its input through unchanged: `hidden_states` keeps its
length, so the feature index still picks the same tensor and the features are bit-identical. The tower's own
`last_hidden_state` and `pooler_output` then stop at the feature layer; LLaVA-style encoders use neither.
Outside the encoder call (a user running the tower directly) every layer runs as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from fastervlm.models.base import ModelAdapter
from fastervlm.runtime.call import CallLocal
from fastervlm.runtime.wrap import InstanceBound, wrap


class TowerTrim(InstanceBound):
    """Skip `layers` (each a vision encoder layer) while one of the wrapped encoders runs (in this call)."""

    active = CallLocal(False)

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.undos = [wrap(layer, "forward", self._skip) for layer in layers]

    def _skip(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.active:
            return original(*args, **kwargs)
        return args[0] if args else kwargs["hidden_states"]

    def around(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Wrapper body for an encoder method (get_image_features, ...): the skip is on only inside it."""
        outer, self.active = self.active, True
        try:
            return original(*args, **kwargs)
        finally:
            self.active = outer

    def removers(self) -> list[Callable[[], None]]:
        return list(self.undos)


def trim_tower(model: nn.Module, adapter: ModelAdapter, score_layer: int | None = None) -> list[Callable[[], None]]:
    """Install a TowerTrim around every modality encoder of `model`; return the undos (empty if nothing to skip).

    score_layer: a method's scored vision layer, which must run too when it lies after the feature layer.
    """
    undos: list[Callable[[], None]] = []
    base = adapter.base(model)
    for modality in adapter.modalities(model):
        layers = adapter.unused_vision_layers(model, modality.name, score_layer)
        if layers:
            trim = TowerTrim(layers)
            undos += trim.removers()
            undos.append(wrap(base, modality.encoder, trim.around))
    return undos
