"""Percentiles for every bench script: one definition, so a p99 means the same everywhere.

A percentile here interpolates linearly between the two samples around its rank (rank
q * (n - 1) in the sorted samples: the median at q = 0.5, the smallest sample at 0 and the
largest at 1), so it is defined for any number of samples, one included. Bench scripts
take their medians from here too, not from `statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """The `q` quantile (0 <= q <= 1) of `samples` (at least one)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("a percentile of no samples")
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is 0..1, not {q}")
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(samples: Iterable[float]) -> float:
    """The median of `samples` (at least one): `percentile(samples, 0.5)`."""
    return percentile(samples, 0.5)


def p50_p99(samples: Iterable[float]) -> tuple[float, float]:
    """The median and the 99th percentile of `samples`."""
    ordered = sorted(samples)
    return percentile(ordered, 0.5), percentile(ordered, 0.99)
