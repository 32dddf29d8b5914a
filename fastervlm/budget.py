"""How many visual tokens each view keeps."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch


def plain(value: Any) -> Any:
    """A 0-d tensor as its Python scalar, so a tensor and the number it holds are one option value."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        return value.item()
    return value


def real_number(name: str, value: Any, what: str) -> float:
    """value as a float when it is a real number of any numeric type (Python, numpy, a 0-d tensor).

    bool is refused although Python counts it as an int: ratio=True is a slip, not a fraction.
    """
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number ({what}), got {type(value).__name__} {value!r}")
    return float(value)


def whole_number(name: str, value: Any, what: str) -> int:
    """value as an int when it is an integer of any integer type (Python, numpy, a 0-d integer tensor)."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer ({what}), got {type(value).__name__} {value!r}")
    return int(value)


def check_fraction(name: str, value: Any) -> float:
    """value as a float in [0, 1] (NaN refused), or an error naming the argument."""
    number = real_number(name, value, "fraction of visual tokens removed")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (fraction of visual tokens removed), got {value!r}")
    return number


def check_count(name: str, value: Any, what: str) -> int:
    """value as an int >= 0, or an error naming the argument."""
    number = whole_number(name, value, what)
    if number < 0:
        raise ValueError(f"{name} must be an int >= 0 ({what}), got {value!r}")
    return number


def kept_count(num_patches: int, ratio: float) -> int:
    """Patches kept in one view.

    round(), not floor(): the paper's tables use round((1 - ratio) * N), e.g. 576 -> 58 at 90 %, and matching
    those tables is the point. Python's round() is half-to-even, as numpy's is in the reference code.
    """
    return round((1.0 - ratio) * num_patches)


def normalize_budget(config: Any) -> None:
    """Check a method config's ratio / tokens fields and store them as a plain float / int.

    Called from a frozen config's __post_init__, so a config built from numpy or tensor values prints,
    compares and serialises like one built from Python numbers.
    """
    if config.ratio is not None:
        object.__setattr__(config, "ratio", check_fraction("ratio", config.ratio))
    if config.tokens is not None:
        object.__setattr__(config, "tokens", check_count("tokens", config.tokens, "visual tokens kept per view"))


@dataclass(frozen=True)
class Budget:
    """A per-view token budget: either a removal `ratio` or an absolute `tokens` count, never both."""

    ratio: float | None = 0.9
    tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.tokens is None):
            raise ValueError(f"give exactly one of ratio or tokens, got ratio={self.ratio!r}, tokens={self.tokens!r}")
        normalize_budget(self)

    def check_fits(self, num_patches: int) -> None:
        """Refuse a token budget larger than a view, at prune() time rather than mid-forward."""
        if self.tokens is not None and self.tokens > num_patches:
            raise ValueError(
                f"tokens must be in [0, {num_patches}] (patches per view of this model), got {self.tokens}"
            )

    def kept(self, num_patches: int) -> int:
        if self.tokens is not None:
            self.check_fits(num_patches)
            return self.tokens
        return kept_count(num_patches, self.ratio)

    def kept_at_most(self, num_tokens: int) -> int:
        """Kept of a sample's num_tokens when a token budget may exceed them (in-LLM methods: samples hold any
        number of images, none included): a sample with fewer than `tokens` keeps all it has."""
        if self.tokens is not None:
            return min(self.tokens, num_tokens)
        return kept_count(num_tokens, self.ratio)
