"""Paired comparison of two evaluations of the same problems (``presrm compare A B``).

Both runs must cover exactly the same problem ids (read from the samples file
next to each summary). For each extractor (strict, flexible) this gives both
accuracies, the difference B - A, the discordant counts ``b`` (A right, B
wrong) and ``c`` (A wrong, B right), and McNemar's test on them:

- ``p_exact``: the exact two-sided binomial test of ``min(b, c)`` under
  Binomial(b + c, 1/2), ``min(1, 2 * P(X <= min(b, c)))``. This is the p-value
  the CLI reports: it never exceeds its nominal level.
- ``p_mid``: the mid-p variant, ``p_exact - P(X = min(b, c))`` (for b != c),
  less conservative, closer to nominal size in small samples (Fagerland et al., 2013).

With no discordant pair (b + c = 0) both p-values are 1.

``repeats`` pairs the solutions that state one step twice, word for word
(:func:`presrm.grading.repeats_a_step`), with the same McNemar test: ``b`` counts
problems where only A repeats, ``c`` those where only B does; ``no_answer`` the same
for solutions with no final answer under strict extraction.

The step error rate (:func:`presrm.grading.step_error_rate`) is compared on the same
problems too: the difference B - A of the pooled rates, a 95% paired bootstrap
interval (problems resampled jointly for both runs, :data:`STEP_RESAMPLES` times
with a fixed seed) and ``p_bootstrap``, twice the smaller share of resamples on
either side of zero (:func:`presrm.stats.paired_bootstrap`). It is None, with a
``reason``, when a samples file has no step counts (written before they existed).

>>> mcnemar(0, 10)["p_exact"]
0.001953125
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from math import comb
from pathlib import Path
from typing import Any

from presrm.errors import DataError
from presrm.grading import STEP_RESAMPLES, STEP_SEED, record_step_counts, repeats_a_step
from presrm.jsonio import read_json, read_jsonl
from presrm.layout import EvalLayout, samples_for
from presrm.stats import paired_bootstrap, pooled_ratio

EXTRACTORS = ("strict", "flexible")


def mcnemar(b: int, c: int) -> dict[str, Any]:
    """Exact and mid-p two-sided McNemar p-values from the discordant counts ``b`` and ``c``.

    Exact integer arithmetic, so the p-values do not underflow for large ``b + c``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n, low = b + c, min(b, c)
    if n == 0:
        return {"b": b, "c": c, "n_discordant": 0, "p_exact": 1.0, "p_mid": 1.0}
    total = 2**n
    tail = Fraction(sum(comb(n, i) for i in range(low + 1)), total)
    p_exact = min(Fraction(1), 2 * tail)
    p_mid = min(Fraction(1), 2 * tail - Fraction(comb(n, low), total))
    return {"b": b, "c": c, "n_discordant": n, "p_exact": float(p_exact), "p_mid": float(p_mid)}


def _locate(path: str | Path) -> tuple[Path, Path]:
    """A results file (or a folder holding results.json) and the samples file next to it."""
    p = Path(path)
    results = EvalLayout(p).results if p.is_dir() else p
    if not results.is_file():
        raise DataError(f"{results}: no such results file (pass a results.json or the folder holding it)")
    samples = samples_for(results)
    if not samples.is_file():
        raise DataError(f"{samples}: missing; a paired comparison needs the per-problem samples next to {results}")
    return results, samples


def _records(samples: Path) -> dict[str, dict[str, Any]]:
    """The samples by problem id; DataError on a repeated id."""
    out: dict[str, dict[str, Any]] = {}
    for n, rec in enumerate(read_jsonl(samples, required=("id", *(f"correct_{e}" for e in EXTRACTORS))), 1):
        pid = str(rec["id"])
        if pid in out:
            raise DataError(f"{samples}: problem id {pid!r} appears twice (record {n})")
        out[pid] = rec
    return out


def _outcomes(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, bool]]:
    return {pid: {e: bool(rec[f"correct_{e}"]) for e in EXTRACTORS} for pid, rec in records.items()}


def paired(a: dict[str, dict[str, bool]], b: dict[str, dict[str, bool]], ids: Sequence[str]) -> dict[str, Any]:
    """Per extractor: accuracies, difference, discordant counts and McNemar p-values over ``ids``."""
    n = len(ids)
    out: dict[str, Any] = {}
    for e in EXTRACTORS:
        ka = sum(a[i][e] for i in ids)
        kb = sum(b[i][e] for i in ids)
        only_a = sum(a[i][e] and not b[i][e] for i in ids)
        only_b = sum(b[i][e] and not a[i][e] for i in ids)
        out[e] = {"correct_a": ka, "correct_b": kb, "accuracy_a": ka / n if n else 0.0,
                  "accuracy_b": kb / n if n else 0.0, "difference": (kb - ka) / n if n else 0.0,
                  **mcnemar(only_a, only_b)}
    return out


def paired_flag(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], ids: Sequence[str],
                flag: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """How many records of A and of B have ``flag``, and McNemar on the discordant problems (``b``: only A has it,
    ``c``: only B)."""
    fa, fb = ({i: bool(flag(side[i])) for i in ids} for side in (a, b))
    n = len(ids)
    return {"count_a": sum(fa.values()), "count_b": sum(fb.values()),
            "share_a": sum(fa.values()) / n if n else 0.0, "share_b": sum(fb.values()) / n if n else 0.0,
            **mcnemar(sum(fa[i] and not fb[i] for i in ids), sum(fb[i] and not fa[i] for i in ids))}


def paired_repeats(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], ids: Sequence[str]) -> dict[str, Any]:
    """How many solutions of A and of B repeat a step word for word, and McNemar on the discordant problems."""
    return paired_flag(a, b, ids, repeats_a_step)


def paired_no_answer(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], ids: Sequence[str]) -> dict[str, Any]:
    """How many solutions of A and of B state no final answer (strict extraction), and McNemar on the discordant
    problems."""
    return paired_flag(a, b, ids, lambda rec: rec.get("pred_strict") is None)


def _rate_difference(xs: list[tuple[int, int, int, int]]) -> float | None:
    """B's pooled step error rate minus A's over ``(wrong_a, verifiable_a, wrong_b, verifiable_b)`` rows."""
    ra, rb = pooled_ratio([(w, v) for w, v, _, _ in xs]), pooled_ratio([(w, v) for _, _, w, v in xs])
    return None if ra is None or rb is None else rb - ra


def paired_step_errors(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], ids: Sequence[str], *,
                       resamples: int = STEP_RESAMPLES, seed: int = STEP_SEED) -> dict[str, Any]:
    """Both step error rates over ``ids``, their difference B - A, its paired bootstrap interval and p-value.

    ``a`` and ``b`` are samples by problem id; each needs ``steps_wrong``, ``steps_verifiable``
    and ``steps_timed_out`` (else ``difference`` is None and ``reason`` says why).
    """
    ca, cb = [record_step_counts(a[i]) for i in ids], [record_step_counts(b[i]) for i in ids]
    missing = [side for side, c in (("A", ca), ("B", cb)) if None in c]
    if missing:
        return {"difference": None, "reason": f"no step counts in the samples of {' and '.join(missing)} "
                                              "(written before steps_wrong / steps_verifiable existed)"}
    rows = [(x[0], x[1], y[0], y[1]) for x, y in zip(ca, cb, strict=True) if x is not None and y is not None]
    out: dict[str, Any] = {}
    for side, c, k in (("a", ca, 0), ("b", cb, 2)):
        wrong, verifiable = sum(r[k] for r in rows), sum(r[k + 1] for r in rows)
        out.update({f"rate_{side}": pooled_ratio([(wrong, verifiable)]), f"wrong_{side}": wrong,
                    f"verifiable_{side}": verifiable, f"timeouts_{side}": sum(v[2] for v in c if v is not None)})
    boot = paired_bootstrap(list(ids), rows, _rate_difference, resamples=resamples, seed=seed)
    return {**out, "difference": _rate_difference(rows), "ci95": boot["ci95"], "p_bootstrap": boot["p_bootstrap"],
            "resamples": resamples, "seed": seed,
            "test": "paired bootstrap over problems; p_bootstrap = 2 x the smaller share of resamples on either "
                    "side of 0"}


def compare_runs(path_a: str | Path, path_b: str | Path, *, common: bool = False) -> dict[str, Any]:
    """Compare two evaluations; DataError when they do not cover the same problems, unless ``common``: then
    only the problems both evaluated are paired (an error when they share none)."""
    (ra, sa), (rb, sb) = _locate(path_a), _locate(path_b)
    rec_a, rec_b = _records(sa), _records(sb)
    a, b = _outcomes(rec_a), _outcomes(rec_b)
    evaluated = {"a": len(a), "b": len(b)}
    if common and set(a) & set(b):
        shared = set(a) & set(b)
        a, b = {k: v for k, v in a.items() if k in shared}, {k: v for k, v in b.items() if k in shared}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise DataError(f"{sa} and {sb} cover different problems: {len(only_a)} only in A (e.g. {only_a[:3]}), "
                        f"{len(only_b)} only in B (e.g. {only_b[:3]}); compare runs on the same problems")
    ids = sorted(a)
    pa, pb = read_json(ra).get("protocol") or {}, read_json(rb).get("protocol") or {}
    differs = sorted(k for k in ("task", "version", "prompt_sha256", "shots", "extractors", "match", "decoding",
                                 "max_new_tokens") if pa.get(k) != pb.get(k))
    return {"a": str(ra), "b": str(rb), "n": len(ids), "evaluated": evaluated, "protocol_differs": differs,
            **paired(a, b, ids),
            "test": "McNemar, exact two-sided binomial on the discordant pairs (p_exact); mid-p also given",
            "step_errors": paired_step_errors(rec_a, rec_b, ids), "repeats": paired_repeats(rec_a, rec_b, ids),
            "no_answer": paired_no_answer(rec_a, rec_b, ids)}


def _pct(x: float | None, spec: str = "6.1f") -> str:
    return "    n/a" if x is None else f"{100 * x:{spec}}%"


def format_comparison(result: dict[str, Any]) -> str:
    """A small text table for the terminal."""
    seen = result.get("evaluated") or {}
    lines = [f"A: {result['a']}", f"B: {result['b']}", f"{result['n']} paired problems"
             + (f" (of {seen['a']} in A and {seen['b']} in B)" if seen and seen["a"] != seen["b"] else "")]
    if result["protocol_differs"]:
        lines.append(f"protocols differ in: {', '.join(result['protocol_differs'])}")
    lines.append(f"{'extractor':<10} {'acc A':>7} {'acc B':>7} {'B - A':>7} {'b (A only)':>10} {'c (B only)':>10} "
                 f"{'p exact':>8} {'mid-p':>8}")
    for e in EXTRACTORS:
        r = result[e]
        lines.append(f"{e:<10} {100 * r['accuracy_a']:6.1f}% {100 * r['accuracy_b']:6.1f}% "
                     f"{100 * r['difference']:+6.1f}% {r['b']:>10} {r['c']:>10} {r['p_exact']:8.4f} {r['p_mid']:8.4f}")
    lines += _step_error_lines(result.get("step_errors"))
    for key, what in (("repeats", "solutions that state a step twice, word for word"),
                      ("no_answer", "solutions with no final answer (strict)")):
        r = result.get(key)
        if r:
            lines.append(f"{key:<10} {100 * r['share_a']:6.1f}% {100 * r['share_b']:6.1f}% "
                         f"{100 * (r['share_b'] - r['share_a']):+6.1f}% {r['b']:>10} {r['c']:>10} "
                         f"{r['p_exact']:8.4f} {r['p_mid']:8.4f}  ({what}; b: only A, c: only B)")
    return "\n".join(lines)


def _step_error_lines(s: dict[str, Any] | None) -> list[str]:
    """The step error rate's rows of the table (wrong / verifiable steps, paired bootstrap)."""
    if not s or "rate_a" not in s:
        return [f"step errors: {(s or {}).get('reason', 'not compared')}"]
    ci = s["ci95"]
    interval = f"[{_pct(ci[0], '+.1f')}, {_pct(ci[1], '+.1f')}]" if ci else "n/a"
    p = "n/a" if s["p_bootstrap"] is None else f"{s['p_bootstrap']:.4f}"
    diff = _pct(s["difference"], "+6.1f")
    return [f"{'steps':<10} {'err A':>7} {'err B':>7} {'B - A':>7} {'95% CI (B - A)':>21} {'p boot':>8}",
            f"{'error rate':<10} {_pct(s['rate_a'])} {_pct(s['rate_b'])} {diff} {interval:>21} {p:>8}",
            f"  wrong / verifiable steps: A {s['wrong_a']}/{s['verifiable_a']}, B {s['wrong_b']}/{s['verifiable_b']}; "
            f"verifier timeouts: A {s['timeouts_a']}, B {s['timeouts_b']}; p boot = 2 x the smaller share of "
            f"{s['resamples']} paired resamples on either side of 0"]
