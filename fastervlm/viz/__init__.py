"""Pictures of what pruning kept."""

from fastervlm.viz.overlay import kept_grid_figure, model_view, overlay

__all__ = ["kept_grid_figure", "model_view", "overlay"]
