"""Proportions with 95% Wilson score intervals: every rate hf_cai reports carries one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def wilson_interval(successes: float, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); ``(0, 1)`` when there is no data."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    """A measured rate with its 95% Wilson interval."""

    name: str
    successes: float
    total: int

    @property
    def value(self) -> float:
        return self.successes / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.total)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"name": self.name, "value": self.value, "ci95": [low, high], "n": self.total}

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.value:.1%} [{low:.1%}, {high:.1%}] (n={self.total})"
