"""Aggregators that turn per-step scores in [0, 1] into one process reward in [0, 1].

Pure functions. An empty list of scores has no reward: each aggregator
raises ValueError rather than inventing one.

>>> aggregate([0.9, 0.2, 0.8], "min")
0.2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def _check(scores: Sequence[float]) -> None:
    if not scores:
        raise ValueError("cannot aggregate an empty list of step scores")
    for s in scores:
        if not 0.0 <= s <= 1.0 or math.isnan(s):
            raise ValueError(f"step score {s!r} is outside [0, 1]")


def agg_min(scores: Sequence[float]) -> float:
    """The weakest step decides: a chain is as good as its worst link."""
    _check(scores)
    return min(scores)


def agg_mean(scores: Sequence[float]) -> float:
    _check(scores)
    return sum(scores) / len(scores)


def agg_prod(scores: Sequence[float]) -> float:
    """Probability that every step is right, if step errors were independent."""
    _check(scores)
    return math.prod(scores)


def agg_last(scores: Sequence[float]) -> float:
    _check(scores)
    return scores[-1]


def agg_gmean(scores: Sequence[float]) -> float:
    """Geometric mean: like prod, but not biased against long solutions."""
    _check(scores)
    if min(scores) == 0.0:
        return 0.0
    return math.exp(sum(math.log(s) for s in scores) / len(scores))


AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": agg_min,
    "mean": agg_mean,
    "prod": agg_prod,
    "last": agg_last,
    "gmean": agg_gmean,
}


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """Aggregate step scores with the named aggregator (see ``AGGREGATORS``)."""
    try:
        fn = AGGREGATORS[how]
    except KeyError:
        raise ValueError(f"unknown aggregator {how!r}; choose one of {sorted(AGGREGATORS)}") from None
    return fn(scores)
