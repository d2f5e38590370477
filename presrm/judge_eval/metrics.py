"""Judge-eval's metrics: pure functions of scores and labels, each with a table-driven test.

* :func:`processbench` -- ProcessBench F1: the harmonic mean of exact
  first-error accuracy on flawed solutions and "no error" accuracy on correct ones;
* :func:`auroc` -- ranking quality with ties counted half (Mann-Whitney);
* :func:`pairwise_accuracy` -- a correct step vs its perturbed twin; ties and
  unparseable verdicts count 0.5;
* :func:`position_bias` -- how often a pair judge picks the first-shown step;
* :func:`first_error` -- the first step scored below a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def first_error(scores: Sequence[float], threshold: float = 0.5) -> int:
    """The predicted first error: the first step scored below ``threshold``, else -1.

    >>> first_error([0.9, 0.4, 0.2]), first_error([0.9, 0.8]), first_error([0.5], 0.5)
    (1, -1, -1)
    """
    return next((k for k, s in enumerate(scores) if s < threshold), -1)


def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def processbench(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, Any]:
    """ProcessBench F1 of predicted vs gold first-error indices (-1 = no error).

    ``acc_flawed``: exact first-error hits among flawed solutions; ``acc_correct``:
    -1 predicted among correct ones; ``f1``: their harmonic mean (0 when both are 0,
    None when either group is empty).

    >>> processbench([2, -1, -1, 0], [2, 1, -1, -1])["f1"]
    0.5
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} labels")
    flawed = [(p, g) for p, g in zip(predicted, gold, strict=True) if g >= 0]
    correct = [p for p, g in zip(predicted, gold, strict=True) if g < 0]
    a = _ratio(sum(p == g for p, g in flawed), len(flawed))
    b = _ratio(sum(p < 0 for p in correct), len(correct))
    f1 = None if a is None or b is None else (2 * a * b / (a + b) if a + b else 0.0)
    return {"f1": f1, "acc_flawed": a, "acc_correct": b, "n_flawed": len(flawed), "n_correct": len(correct)}


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half).

    Computed from average ranks (the Mann-Whitney U statistic). None when a class is empty.

    >>> auroc([0.9, 0.8, 0.3], [True, False, False]), auroc([0.5, 0.5], [True, False])
    (1.0, 0.5)
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1  # average 1-based rank of the tie group
        i = j + 1
    pos_ranks = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (pos_ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def pairwise_accuracy(outcomes: Sequence[float | None]) -> dict[str, Any]:
    """Share of comparisons won by the correct step: 1 a win, 0 a loss, 0.5 a tie, None unparseable.

    Unparseable verdicts count 0.5 (no preference) in ``accuracy``; ``accuracy_parsed``
    leaves them out.

    >>> pairwise_accuracy([1, 0, 0.5, None])["accuracy"]
    0.5
    """
    bad = [o for o in outcomes if o not in (0, 0.5, 1, None)]
    if bad:
        raise ValueError(f"pairwise outcomes must be 0, 0.5, 1 or None, got {bad[0]!r}")
    parsed = [o for o in outcomes if o is not None]
    n = len(outcomes)
    return {
        "accuracy": _ratio(sum(parsed) + 0.5 * (n - len(parsed)), n),
        "accuracy_parsed": _ratio(sum(parsed), len(parsed)),
        "tie_rate": _ratio(sum(1 for o in parsed if o == 0.5), n),
        "unparseable_rate": _ratio(n - len(parsed), n),
        "n": n,
    }


def position_bias(orders: Sequence[dict[str, Any]]) -> float | None:
    """Share of single-order verdicts that pick the step shown first (0.5: no position bias).

    Each entry is ``{"order": "AB"|"BA", "verdict": "A"|"B"|None}`` with the verdict naming the
    pair's A, as in ``PairVerdict.orders``; unparseable (None) verdicts are left out.

    >>> position_bias([{"order": "AB", "verdict": "A"}, {"order": "BA", "verdict": "B"},
    ...                {"order": "BA", "verdict": "A"}, {"order": "AB", "verdict": None}])
    0.6666666666666666
    """
    decided = [o for o in orders if o.get("verdict") in ("A", "B")]
    return _ratio(sum(o["verdict"] == o["order"][0] for o in decided), len(decided))


def _auroc_of(pairs: list[tuple[float, bool]]) -> float | None:
    return auroc([s for s, _ in pairs], [y for _, y in pairs])


def _mean_of(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
