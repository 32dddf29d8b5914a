"""Pictures of what pruning kept."""

from fastervlm.viz.figure import kept_figure, save_figure
from fastervlm.viz.heatmap import cls_attention, received_attention
from fastervlm.viz.kept import kept_reports
from fastervlm.viz.overlay import kept_grid_figure, model_view, overlay

__all__ = [
    "cls_attention",
    "kept_figure",
    "kept_grid_figure",
    "kept_reports",
    "model_view",
    "overlay",
    "received_attention",
    "save_figure",
]
