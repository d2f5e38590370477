"""The collapse guard: is the model an iteration just trained worse than the one it came from?

Self-rewarding on the model's own rewards can rise and then collapse: in presrm's own recipes the model
learnt to repeat its steps word for word, to write steps with no arithmetic, or to stop giving an answer,
and only the final evaluation said so. After each iteration the loop evaluates the new model and its
predecessor on a dev slice of the *training* split (never the test split) and compares them, problem by
problem, on three signs of collapse:

- ``step_errors``: the pooled share of verifiably wrong steps (higher is worse; paired bootstrap over
  problems, :func:`presrm.compare.paired_step_errors`);
- ``repeats``: solutions that state one step twice, word for word (more is worse; McNemar);
- ``no_answer``: solutions with no final answer under strict extraction (more is worse; McNemar).

The new model is *worse* when any of the three moved the wrong way at ``p < alpha``. What follows is
``loop.guard``: ``stop`` (the model is not promoted: the run ends with its predecessor as the final model),
``warn`` (a warning, the run goes on) or ``off`` (no dev evaluation at all).

>>> same = {"p": {"steps_wrong": 1, "steps_verifiable": 2, "steps_timed_out": 0, "pred_strict": "3",
...               "steps": [{"text": "Step 1: 1 + 2 = 3"}]}}
>>> verdict = decide(same, same)
>>> verdict["worse"], verdict["promote"]
([], True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from presrm.compare import paired_no_answer, paired_repeats, paired_step_errors

MODES = ("stop", "warn", "off")
"""``loop.guard``: not promote a worse model, say so and go on, or no guard."""
SIGNALS = ("step_errors", "repeats", "no_answer")
"""What the guard compares, each higher-is-worse."""


def _worse(signal: str, result: dict[str, Any], alpha: float) -> bool:
    """Whether ``result`` (one signal's paired comparison, A = before, B = after) says B is worse at ``alpha``."""
    if signal == "step_errors":
        diff, p = result.get("difference"), result.get("p_bootstrap")
        return diff is not None and p is not None and diff > 0 and p < alpha
    return result["c"] > result["b"] and result["p_exact"] < alpha


def decide(before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]], *,
           alpha: float = 0.05) -> dict[str, Any]:
    """Compare ``after`` (the new model's dev records by problem id) with ``before`` (its predecessor's).

    Only the problems both evaluated are paired. Returns the three paired comparisons (``signals``),
    the names of those that got worse at ``p < alpha`` (``worse``), and ``promote`` (no signal got worse).
    """
    ids = sorted(set(before) & set(after))
    if not ids:
        raise ValueError("the guard's two dev evaluations share no problem")
    signals = {"step_errors": paired_step_errors(dict(before), dict(after), ids),
               "repeats": paired_repeats(dict(before), dict(after), ids),
               "no_answer": paired_no_answer(dict(before), dict(after), ids)}
    worse = [s for s in SIGNALS if _worse(s, signals[s], alpha)]
    return {"n": len(ids), "alpha": alpha, "signals": signals, "worse": worse, "promote": not worse}


def describe(verdict: dict[str, Any]) -> str:
    """One line: what got worse (figures and p-values), or that nothing did.

    >>> describe({"n": 50, "worse": [], "signals": {}})
    'no sign of collapse on 50 dev problems'
    """
    if not verdict["worse"]:
        return f"no sign of collapse on {verdict['n']} dev problems"
    parts = []
    for s in verdict["worse"]:
        r = verdict["signals"][s]
        if s == "step_errors":
            parts.append(f"step error rate {100 * r['rate_a']:.1f}% -> {100 * r['rate_b']:.1f}% "
                         f"(p = {r['p_bootstrap']:.3g})")
        else:
            parts.append(f"{s.replace('_', ' ')} {r['count_a']} -> {r['count_b']} of {verdict['n']} "
                         f"(McNemar p = {r['p_exact']:.3g})")
    return f"worse on {verdict['n']} dev problems: " + "; ".join(parts)
