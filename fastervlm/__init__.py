"""fastervlm: training-free visual token pruning for vision-language models."""

from fastervlm.api import last_report, prune, unprune
from fastervlm.methods import METHODS
from fastervlm.report import Report

__all__ = ["METHODS", "Report", "last_report", "prune", "unprune"]
__version__ = "0.1.0"
