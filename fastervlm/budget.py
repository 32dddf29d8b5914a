"""How many visual tokens each view keeps."""

from __future__ import annotations

from dataclasses import dataclass


def check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (fraction of visual tokens removed), got {value!r}")


def kept_count(num_patches: int, ratio: float) -> int:
    """Patches kept in one view.

    round(), not floor(): the paper's tables use round((1 - ratio) * N), e.g. 576 -> 58 at 90 %, and matching
    those tables is the point. Python's round() is half-to-even, as numpy's is in the reference code.
    """
    return round((1.0 - ratio) * num_patches)


@dataclass(frozen=True)
class Budget:
    """A per-view token budget: either a removal `ratio` or an absolute `tokens` count, never both."""

    ratio: float | None = 0.9
    tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.tokens is None):
            raise ValueError(f"give exactly one of ratio or tokens, got ratio={self.ratio!r}, tokens={self.tokens!r}")
        if self.ratio is not None:
            check_fraction("ratio", self.ratio)
        if self.tokens is not None and (
            isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0
        ):
            raise ValueError(f"tokens must be an int >= 0 (visual tokens kept per view), got {self.tokens!r}")

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
