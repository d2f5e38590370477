"""Aggregators that turn per-step scores in [0, 1] into one process reward in [0, 1].

Pure functions. An empty list of scores has no reward: each aggregator
raises ValueError rather than inventing one, and so does a score outside
[0, 1] (or NaN). ``combine_with_outcome`` mixes a process reward with the
verified outcome of the whole solution.

>>> aggregate([0.9, 0.2, 0.8], "min")
0.2
>>> combine_with_outcome(0.6, True, weight=0.5)
0.8
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


def combine_with_outcome(process_reward: float, outcome_correct: bool | None, weight: float) -> float:
    """``(1 - weight) * process_reward + weight * outcome``, outcome 1.0 if correct else 0.0.

    ``weight`` = 0 keeps the process reward; 1 keeps only the outcome. When
    the outcome is unknown (None: no gold answer, or nothing extracted) the
    process reward is returned unchanged.

    Note: ``outcome_correct`` is the *verified* outcome (``presrm.verify``),
    not the self-judge's opinion of it.
    """
    if not 0.0 <= process_reward <= 1.0 or math.isnan(process_reward):
        raise ValueError(f"process reward {process_reward!r} is outside [0, 1]")
    if not 0.0 <= weight <= 1.0 or math.isnan(weight):
        raise ValueError(f"outcome weight {weight!r} is outside [0, 1]")
    if outcome_correct is None:
        return process_reward
    return (1.0 - weight) * process_reward + weight * (1.0 if outcome_correct else 0.0)
