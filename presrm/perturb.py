"""The one generator of arithmetic perturbations: a correct step and its verifiably wrong twin.

EFT judge examples (:mod:`presrm.init_data`), the synthetic labelled set of
``judge-eval`` (:mod:`presrm.labelled`) and the verifier benchmark
(``benchmarks/bench_verify.py``) all change numbers through this module:

* :func:`perturb_value` -- a number changed by one of :data:`KINDS`, in the same
  notation (sign, thousands separators, decimals kept);
* :func:`perturb` -- every way to change one arithmetic *result* of a step (a
  number right after ``=`` that starts no further arithmetic), in a seeded order;
* :func:`confirmed_perturbation` -- the first of those the verifier confirms:
  the step checks ``correct`` and its twin ``incorrect``, so the label comes from
  the verifier, never from the perturbation alone.

>>> import random
>>> [(t, p["to"]) for t, p in perturb("Step 1: 48/2 = 24 clips", random.Random(0))]
[('Step 1: 48/2 = 19 clips', '19')]
"""

from __future__ import annotations

import random
import re
from decimal import Decimal
from typing import Any

from presrm.verify import NUMBER, check_step

KINDS = ("delta", "plus_one", "minus_one", "times_ten", "digit")
"""How a number changes: by a random delta from :data:`DELTAS`, by +1, by -1, times ten, or one digit."""
DELTAS = (1, 2, 3, 5, 10)
MAX_TRIES = 8
"""Perturbation candidates a caller tries per step before giving up."""

# A number right after "=" (an optional "$"), that is not itself the start of more arithmetic.
_RESULT = re.compile(
    rf"=[ \t]*\$?[ \t]*(?P<num>-?{NUMBER})"
    r"(?![\d.,]*\d)(?![ \t]*(?:[-+*/×÷^(]|x[ \t]*\d))"
)


def result_spans(step: str) -> list[tuple[int, int]]:
    """Character spans of the arithmetic results a step states (numbers right after ``=``).

    >>> result_spans("Step 1: 48/2 = 24 clips, 24 + 48 = 72")
    [(15, 17), (35, 37)]
    """
    return [m.span("num") for m in _RESULT.finditer(step)]


def _format(value: Decimal, like: str) -> str:
    """``value`` written like ``like``: the same number of decimals, separators if ``like`` has them."""
    decimals = len(like.split(".", 1)[1]) if "." in like else 0
    value = value.quantize(Decimal(1).scaleb(-decimals))
    return format(value, "," if "," in like else "f")


def perturb_value(raw: str, kind: str, rng: random.Random) -> str:
    """``raw`` changed by ``kind`` (one of :data:`KINDS`), never equal to it, never negative if it was not.

    >>> rng = random.Random(0)
    >>> [perturb_value("1,200", k, rng) for k in ("plus_one", "minus_one", "times_ten")]
    ['1,201', '1,199', '12,000']
    >>> perturb_value("4.5", "times_ten", rng), perturb_value("0", "minus_one", rng)
    ('45.0', '2')
    """
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; expected one of {', '.join(KINDS)}")
    value = Decimal(raw.replace(",", ""))
    if kind == "digit":
        positions = [i for i, ch in enumerate(raw) if ch.isdigit()]
        i = rng.choice(positions)
        leading = i == positions[0] and len(raw.lstrip("-").replace(",", "").split(".")[0]) > 1
        digits = [d for d in "0123456789" if d != raw[i] and not (leading and d == "0")]
        return raw[:i] + rng.choice(digits) + raw[i + 1:]
    if kind == "delta":
        delta = rng.choice(DELTAS) * rng.choice((1, -1))
        if value >= 0 > value + delta:
            delta = -delta
        new = value + delta
    else:
        new = {"plus_one": value + 1, "minus_one": value - 1, "times_ten": value * 10}[kind]
        if new == value or (value >= 0 > new):
            new = value + 2
    return _format(new, raw)


def perturb(step: str, rng: random.Random, kinds: tuple[str, ...] = ("delta",)) -> list[tuple[str, dict[str, Any]]]:
    """Every way to change one arithmetic result of ``step``, in a seeded random order.

    ``info`` says what changed: ``{"from", "to", "kind", "delta" (for kind delta), "char"}``
    with ``char`` the position of the number in ``step``.
    """
    out = []
    for m in _RESULT.finditer(step):
        raw = m.group("num")
        kind = kinds[0] if len(kinds) == 1 else rng.choice(kinds)
        new = perturb_value(raw, kind, rng)
        if new == raw:
            continue
        text = step[: m.start("num")] + new + step[m.end("num"):]
        info: dict[str, Any] = {"from": raw, "to": new, "kind": kind, "char": m.start("num")}
        if kind == "delta":
            info["delta"] = float(Decimal(new.replace(",", "")) - Decimal(raw.replace(",", "")))
        out.append((text, info))
    rng.shuffle(out)
    return out


def confirmed_perturbation(step: str, rng: random.Random, *, kinds: tuple[str, ...] = ("delta",),
                           max_tries: int = MAX_TRIES) -> tuple[str, dict[str, Any]] | None:
    """A twin of ``step`` with one result changed that the verifier checks ``incorrect``, or None.

    None also when ``step`` itself is not verifiably ``correct``. ``info`` adds the wrong claim as
    the verifier read it: ``lhs``, its true ``value`` and the ``wrong_rhs`` the twin states.

    >>> twin, info = confirmed_perturbation("Step 1: 3 + 4 = 7 apples", random.Random(2))
    >>> twin, info["lhs"], info["value"]
    ('Step 1: 3 + 4 = 8 apples', '3 + 4', '7')
    """
    if check_step(step).verdict != "correct":
        return None
    for text, info in perturb(step, rng, kinds)[:max_tries]:
        check = check_step(text)
        if check.verdict != "incorrect":
            continue
        wrong = next(c for c in check.claims if c.ok is False)
        return text, {**info, "lhs": wrong.lhs, "value": wrong.value, "wrong_rhs": wrong.rhs}
    return None
