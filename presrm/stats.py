"""Bootstrap intervals over problems, shared by every figure that needs one.

Steps of one problem are not independent, so every interval here resamples whole
problems (clusters) with replacement, with a fixed seed so a rerun gives the same
interval:

* :func:`bootstrap_values` -- the statistic on each resample;
* :func:`bootstrap_ci` -- a percentile interval of a statistic (judge AUROC, pairwise
  accuracy, the step error rate);
* :func:`pooled_ratio` -- sum of numerators over sum of denominators (a ratio estimator);
* :func:`paired_bootstrap` -- a paired difference of two runs on the same problems:
  its interval and a two-sided bootstrap p-value.

>>> pooled_ratio([(1, 4), (0, 0), (2, 2)])
0.5
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["bootstrap_ci", "bootstrap_values", "paired_bootstrap", "percentile_interval", "pooled_ratio"]


def bootstrap_values(clusters: Sequence[Any], items: Sequence[Any], stat: Callable[[list[Any]], float | None], *,
                     resamples: int = 1000, seed: int = 0) -> list[float]:
    """``stat`` on each of ``resamples`` resamples of whole clusters, in draw order; None values are left out.

    ``clusters[i]`` names the problem of ``items[i]``; each resample draws as many
    clusters as there are, with replacement, and passes all their items to ``stat``.

    >>> bootstrap_values(["a", "b"], [0, 1], sum, resamples=4, seed=1)
    [1, 1, 0, 2]
    """
    by: dict[Any, list[Any]] = {}
    for c, item in zip(clusters, items, strict=True):
        by.setdefault(c, []).append(item)
    keys = list(by)
    if not keys:
        return []
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        v = stat([item for k in rng.choices(keys, k=len(keys)) for item in by[k]])
        if v is not None:
            values.append(v)
    return values


def percentile_interval(values: Sequence[float], resamples: int, level: float = 0.95) -> list[float] | None:
    """The percentile interval of bootstrap ``values``; None when fewer than half of ``resamples`` gave one."""
    if not values or len(values) < resamples / 2:
        return None
    values = sorted(values)
    lo = values[int((1 - level) / 2 * (len(values) - 1))]
    hi = values[int((1 + level) / 2 * (len(values) - 1) + 0.5)]
    return [lo, hi]


def bootstrap_ci(clusters: Sequence[Any], items: Sequence[Any], stat: Callable[[list[Any]], float | None], *,
                 resamples: int = 1000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """A percentile bootstrap interval of ``stat(items)``, resampling whole clusters (problems).

    ``clusters[i]`` names the problem of ``items[i]``; steps of one problem are not independent,
    so problems, not steps, are drawn with replacement. Resamples where ``stat`` is None (a class
    missing) are skipped; None when fewer than half of them give a value.

    >>> bootstrap_ci(["a", "b", "c", "d"], [1, 1, 0, 1], lambda xs: sum(xs) / len(xs), resamples=200)
    [0.25, 1.0]
    """
    return percentile_interval(bootstrap_values(clusters, items, stat, resamples=resamples, seed=seed),
                               resamples, level)


def pooled_ratio(pairs: Sequence[tuple[float, float]]) -> float | None:
    """``sum(numerators) / sum(denominators)`` over ``(numerator, denominator)`` pairs; None when the sum is 0.

    Note:
        This pools before dividing: problems with more denominator (e.g. more verifiable
        steps) weigh more. It is not the mean of per-problem ratios.

    >>> pooled_ratio([(1, 1), (0, 3)])
    0.25
    """
    den = sum(d for _, d in pairs)
    return sum(n for n, _ in pairs) / den if den else None


def paired_bootstrap(ids: Sequence[Any], items: Sequence[Any], stat: Callable[[list[Any]], float | None], *,
                     resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Interval and two-sided bootstrap p-value of a paired difference ``stat(items)``.

    ``items[i]`` holds both runs' figures for problem ``ids[i]``, so each resample draws
    problems jointly for the two runs. ``p_bootstrap`` is twice the smaller share of
    resamples on either side of zero (``d <= 0`` or ``d >= 0``), at most 1: the share of
    resamples that cross zero, doubled. Its resolution is ``1 / resamples``; 0 means
    no resample reached zero.

    >>> r = paired_bootstrap(["a", "b", "c"], [-1.0, -2.0, -1.0], lambda xs: sum(xs) / len(xs), resamples=100)
    >>> r["ci95"][1] < 0, r["p_bootstrap"]
    (True, 0.0)
    """
    values = bootstrap_values(ids, items, stat, resamples=resamples, seed=seed)
    if not values:
        return {"ci95": None, "p_bootstrap": None, "resamples_used": 0}
    below = sum(v <= 0 for v in values)
    above = sum(v >= 0 for v in values)
    return {"ci95": percentile_interval(values, resamples, level),
            "p_bootstrap": min(1.0, 2 * min(below, above) / len(values)), "resamples_used": len(values)}
