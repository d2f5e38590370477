"""Rule-based verification of GSM8K-style solutions: final answers and step arithmetic.

A tiny public surface over a deep core, in the style of HF Math-Verify:

* :func:`extract_answer` finds the final answer in a completion;
* :func:`answers_match` decides whether a predicted answer equals the gold one;
* :func:`check_step` finds every arithmetic claim in one step and checks it exactly;
* :func:`check_solution` checks a list of steps and names the first wrong one;
* :func:`verify_file` does all of it for a JSONL file (the ``presrm verify`` command).

Model output is untrusted: expressions are read by a whitelisted tokenizer and
our own precedence-climbing parser into exact sympy rationals (nothing is ever
evaluated as code), and every call is bounded (:class:`Limits`). A step that
crosses a bound is ``unverifiable``; these functions never hang on hostile text.
The LaTeX fallback of :func:`answers_match` runs math-verify in a worker process
that is killed after :data:`MV_TIMEOUT_S` (``presrm._mathverify``), so that bound
holds in any thread. Numbers are read by one reader, :func:`parse_number` and
the :data:`NUMBER` pattern (``presrm._numbers``), which other modules use too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sympy import Rational

from presrm._arith import DEFAULT_LIMITS, Budget, Limits, OutOfWork
from presrm._claims import step_claims
from presrm._mathverify import MV_TIMEOUT_S, math_verify_match
from presrm._numbers import (
    CURRENCY,
    FRACTION_TAIL,
    NUMBER,
    NUMBER_RE,
    SIGNED_NUMBER,
    parse_number,
)
from presrm.errors import DataError, WriteError
from presrm.jsonio import iter_jsonl
from presrm.schema import Claim, EvalRecord, Step, StepCheck

__all__ = [
    "DEFAULT_LIMITS",
    "MV_TIMEOUT_S",
    "NUMBER",
    "NUMBER_RE",
    "SIGNED_NUMBER",
    "TIMEOUT_REASON",
    "Limits",
    "VerifyInputError",
    "answers_match",
    "check_solution",
    "check_step",
    "extract_answer",
    "is_timeout",
    "parse_number",
    "verify_file",
]

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 512
"""Longest answer string :func:`answers_match` reads; longer ones never match."""
MAX_TEXT_CHARS = 200_000
"""Only the last this-many characters of a completion are searched for its answer."""
MAX_MARKERS = 32
"""Only the last this-many answer markers are tried, latest first."""
TIMEOUT_REASON = "work budget exceeded"
"""The ``reason`` of an ``unverifiable`` step whose check spent ``Limits.max_work`` (see :func:`is_timeout`)."""


class VerifyInputError(DataError):
    """A verify input file is malformed; the message names the file and the line.

    >>> str(VerifyInputError("runs/in.jsonl:3: missing key 'completion'"))
    "runs/in.jsonl:3: missing key 'completion'"
    """


# --------------------------------------------------------------------------- extraction

_VALUE_RE = re.compile(
    rf"(?P<sign>[-−])?\s*{CURRENCY}?\s*(?P<num>[-−]?{NUMBER}{FRACTION_TAIL}?)(?P<pct>\s*\\?%)?(?![0-9.][0-9])"
)
_MARKER_RE = re.compile(
    r"(?P<hashes>####)|(?P<boxed>\\(?:boxed|fbox)\s*\{)"
    r"|\b(?:the\s+)?(?:final\s+)?answer\b(?:\s+to\s+(?:the|this)\s+(?:question|problem))?[*_\s]*"
    r"(?:(?:is|was|would\s+be|will\s+be)\b[*_\s]*:?|[:=])",
    re.IGNORECASE,
)
_MATH_OPEN = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_LAST_NUMBER_RE = re.compile(
    rf"(?<![\w.,/])(?P<sign>-)?\s?{CURRENCY}?\s?(?P<num>{NUMBER}(?:/[0-9]+(?![.0-9]))?)(?!\w)"
)


def _braced(text: str, open_brace: int) -> str | None:
    """The text inside the brace group that opens at ``text[open_brace]`` (nested braces allowed)."""
    depth = 0
    for k in range(open_brace, min(len(text), open_brace + MAX_ANSWER_CHARS)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1:k]
    return None


def _clean(value: str) -> str | None:
    """Trim a raw answer: spaces, math delimiters, currency, a trailing period."""
    value = value.strip().strip("$").strip()
    value = re.sub(r"^(?:\\\$|\\?[$€£])\s*", "", value)
    value = value.rstrip(".").strip()
    return value or None


def _value_after(text: str, pos: int) -> str | None:
    """The answer written right after a marker ending at ``pos``: a number, math, or ``\\boxed``."""
    rest = text[pos:pos + MAX_ANSWER_CHARS].lstrip(" \t\n*_:")
    m = _VALUE_RE.match(rest)
    if m:
        sign = "-" if m.group("sign") else ""
        return sign + m.group("num").replace("−", "-") + ("%" if m.group("pct") else "")
    if rest.startswith(("\\boxed", "\\fbox")):
        brace = rest.find("{")
        return _clean(_braced(rest, brace) or "") if brace >= 0 else None
    for opener, closer in _MATH_OPEN.items():
        if rest.startswith(opener):
            end = rest.find(closer, len(opener))
            return _clean(rest[len(opener):end]) if end > 0 else None
    if rest.startswith("\\"):
        return _clean(re.split(r"\s|\.(?:\s|$)", rest, maxsplit=1)[0])
    return None


def _strict(text: str) -> str | None:
    for m in list(_MARKER_RE.finditer(text))[-MAX_MARKERS:][::-1]:
        if m.group("boxed"):
            inner = _braced(text, m.end() - 1)
            found = _clean(inner) if inner is not None else None
        else:
            found = _value_after(text, m.end())
        if found:
            return found
    return None


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """Find the final answer in a completion.

    ``strict`` accepts ``#### N``, ``\\boxed{...}`` (nested braces), and "answer"
    phrasings: "The answer is N", "The final answer is N", "Final answer: N",
    "**Answer:** N", "Answer: $N". The last marker that is followed by an answer
    wins. ``flexible`` tries strict first, then falls back to the last number in
    the text (``1,000``, ``$5.50``, ``-3``, ``3/4``). The answer comes back as
    written (thousands separators kept) without currency signs, math delimiters
    or a trailing period; None when nothing is found. Only the last
    :data:`MAX_TEXT_CHARS` characters are searched.

    >>> extract_answer("She has 3 + 4 = 7 apples.\\n#### 7")
    '7'
    >>> extract_answer("So the final answer is $\\\\boxed{\\\\frac{3}{4}}$.")
    '\\\\frac{3}{4}'
    >>> extract_answer("In total she pays $1,250.", mode="flexible")
    '1,250'

    Raises:
        ValueError: ``mode`` is neither ``"strict"`` nor ``"flexible"``.
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"unknown extraction mode {mode!r}; use 'strict' or 'flexible'")
    text = text[-MAX_TEXT_CHARS:]
    found = _strict(text)
    if found is not None or mode == "strict":
        return found
    last = None
    for match in _LAST_NUMBER_RE.finditer(text):
        last = match
    return (last.group("sign") or "") + last.group("num") if last else None


# --------------------------------------------------------------------------- matching

_LENIENT_RE = re.compile(
    rf"(?:USD|EUR|GBP)?\s*(?P<num>{SIGNED_NUMBER})"
    r"(?:\s*[eE](?P<exp>[-+]?[0-9]{1,3})|\s*(?:\\times|×|\*|x)\s*10\s*\^\s*\{?(?P<exp2>[-+]?[0-9]{1,3})\}?)?"
    r"\s*(?P<pct>%|percent\b)?\s*(?:[A-Za-z][A-Za-z .'/²³-]*)?[.!]?\s*",
)
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))
_LATEX_NOISE = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")


def _unwrap(text: str) -> str:
    """Strip math delimiters, ``\\boxed{}``, markdown bold and LaTeX spacing around an answer."""
    text = _LATEX_TEXT.sub(r" \1", _LATEX_NOISE.sub("", text.strip()))
    text = text.replace("\\$", "$").replace("\\%", "%").replace("{,}", ",").replace("−", "-")
    for _ in range(4):
        text = text.strip()
        boxed = re.match(r"\\(?:boxed|fbox)\s*\{", text)
        if boxed and text.endswith("}") and _braced(text, boxed.end() - 1) == text[boxed.end():-1]:
            text = text[boxed.end():-1]
            continue
        pair = next(((a, b) for a, b in _WRAPPERS if text.startswith(a) and text.endswith(b)
                     and len(text) >= len(a) + len(b) + 1), None)
        if pair is None:
            break
        text = text[len(pair[0]):len(text) - len(pair[1])]
    return text.strip()


def _lenient_numbers(pred: str) -> tuple[Rational, ...] | None:
    """Values a leniently written plain-number answer may mean (``25%`` means 25 or 0.25)."""
    m = _LENIENT_RE.fullmatch(_unwrap(pred))
    value = None if m is None else parse_number(m.group("num"))
    if value is None:
        return None
    exp = m.group("exp") or m.group("exp2")
    if exp and abs(int(exp)) <= DEFAULT_LIMITS.max_exponent:
        value *= Rational(10) ** int(exp)
    elif exp:
        return None
    return (value, value / 100) if m.group("pct") else (value,)


def answers_match(pred: str | None, gold: str | None) -> bool:
    """Whether the predicted answer ``pred`` equals the reference answer ``gold``.

    Plain numbers take an exact-rational fast path: thousands separators,
    currency signs ($, €, £), ``%``, trailing units and words ("18 dollars",
    "5 apples."), trailing periods, ``10.00 == 10``, fractions ``3/4``, mixed
    numbers ``1 1/2``, negatives, scientific notation, and LaTeX wrappers such
    as ``\\boxed{}``, ``\\$`` and ``\\text{ dollars}``. Anything else (``\\frac``,
    symbolic answers) is handed to math-verify's LaTeX parser in a worker
    process, if it is short and tame (``presrm._mathverify.mv_safe``), and
    counts as no match after :data:`MV_TIMEOUT_S` seconds, in any thread. A
    percentage ``25%`` matches both ``25`` and ``0.25``.

    Note:
        The arguments are not symmetric: ``gold`` is parsed as a clean reference
        number (falling back to math-verify when it is not one), while ``pred``
        is normalized leniently. Strings longer than :data:`MAX_ANSWER_CHARS`
        and None never match.

    >>> answers_match("$1,000.00", "1000")
    True
    >>> answers_match("\\\\frac{3}{4}", "0.75")
    True
    >>> answers_match("18 dollars", "17")
    False
    """
    if pred is None or gold is None or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    gold_value = parse_number(gold)  # a clean reference number: 1,080, -3, 2.5, 3/4
    pred_values = _lenient_numbers(pred)
    if gold_value is not None and pred_values is not None:
        return gold_value in pred_values
    if pred_values is not None and (gold_values := _lenient_numbers(gold)) is not None:
        return bool(set(pred_values) & set(gold_values))
    return math_verify_match(_unwrap(pred), gold, gold_value)


# --------------------------------------------------------------------------- steps


def _verdict(claims: list[Claim]) -> StepCheck:
    bad = [c for c in claims if c.ok is False]
    good = [c for c in claims if c.ok]
    if bad:
        return StepCheck("incorrect", tuple(claims),
                         f"{len(bad)} of {len(claims)} claims fail; first: {bad[0].text} ({bad[0].reason})")
    if good:
        skipped = len(claims) - len(good)
        extra = f"; {skipped} not computable" if skipped else ""
        return StepCheck("correct", tuple(claims), f"{len(good)} claim(s) hold{extra}")
    if claims:
        return StepCheck("unverifiable", tuple(claims), f"no claim could be computed: {claims[0].reason}")
    return StepCheck("unverifiable", (), "no arithmetic claim found")


def check_step(text: str, *, limits: Limits = DEFAULT_LIMITS) -> StepCheck:
    """Find and check every arithmetic claim in one reasoning step.

    Claims are ``a = b`` with ``+ - * x × / ÷ ^ **``, brackets, ``%`` and
    ``\\frac``; chains ``a = b = c`` (each link checked); GSM8K calculator
    annotations ``<<48/2=24>>``; ``20% of 50 = 10``. Values are exact sympy
    rationals. A result written with ``d`` decimals (or after ``≈``) may be the
    exact value rounded *or* truncated to ``d`` places (``10/3 = 3.33`` and
    ``2/3 = 0.66`` hold, ``10/3 = 3.5`` fails); an integer result must be exact.

    Verdict: ``incorrect`` if any claim fails, else ``correct`` if at least one
    holds, else ``unverifiable`` (no claim, or none computable, or a bound in
    ``limits`` was crossed). Claims that cannot be computed (huge powers,
    non-integer exponents) are listed with ``ok=None`` and do not decide the verdict.

    >>> check_step("Natalia sold 48/2 = <<48/2=24>>24 clips in May.").verdict
    'correct'
    >>> check_step("So 16 - 3 - 4 = 10 eggs are left.").verdict
    'incorrect'
    >>> check_step("Step 2: count the eggs.").verdict
    'unverifiable'
    """
    if len(text) > limits.max_chars:
        return StepCheck("unverifiable", (), f"step longer than {limits.max_chars} characters")
    try:
        claims = step_claims(text, limits, Budget(limits.max_work))
    except OutOfWork:
        return StepCheck("unverifiable", (), TIMEOUT_REASON)
    except Exception:  # a safety net: hostile text must never crash a training run
        logger.exception("check_step failed on a %d-character step", len(text))
        return StepCheck("unverifiable", (), "internal error")
    if len(claims) > limits.max_claims:
        return StepCheck("unverifiable", (), f"more than {limits.max_claims} claims")
    return _verdict(claims)


def is_timeout(check: StepCheck | dict[str, Any]) -> bool:
    """Whether a step check (a :class:`StepCheck` or its ``to_dict()``) ran out of its budget.

    Evaluations count these (``verifier_timeouts``). The budget is counted work, so the count
    is a property of the text, not of the machine's load; samples written before it was (a
    wall-clock budget, reason "time budget exceeded") still count.

    >>> is_timeout(check_step("3 + 4 = 7")), is_timeout({"verdict": "unverifiable", "reason": TIMEOUT_REASON})
    (False, True)
    """
    verdict, reason = ((check.get("verdict"), check.get("reason")) if isinstance(check, dict)
                       else (check.verdict, check.reason))
    return verdict == "unverifiable" and reason in (TIMEOUT_REASON, "time budget exceeded")


def check_solution(steps: Sequence[str], *,
                   limits: Limits = DEFAULT_LIMITS) -> tuple[list[StepCheck], int | None]:
    """Check every step of a solution.

    Returns the :class:`~presrm.schema.StepCheck` of each step, in order, and
    the index of the first ``incorrect`` step (None when no step is incorrect;
    ``unverifiable`` steps do not count as errors).

    >>> checks, first_bad = check_solution(["3 + 4 = 7", "7 * 2 = 15", "So 15."])
    >>> [c.verdict for c in checks], first_bad
    (['correct', 'incorrect', 'unverifiable'], 1)
    """
    checks = [check_step(step, limits=limits) for step in steps]
    first_bad = next((k for k, c in enumerate(checks) if c.verdict == "incorrect"), None)
    return checks, first_bad


# --------------------------------------------------------------------------- files


def _line_steps(completion: str) -> list[Step]:
    """Split a completion into steps, one per non-blank line (spans are character offsets)."""
    steps, offset = [], 0
    for line in completion.splitlines(keepends=True):
        text = line.strip()
        if text:
            start = offset + line.index(text)
            steps.append(Step(len(steps), text, start, start + len(text)))
        offset += len(line)
    return steps


def _read_records(path: Path, completion_key: str, gold_key: str):
    """Yield ``(line number, record)`` from a JSONL file, raising :class:`VerifyInputError` on bad lines."""
    for lineno, record in iter_jsonl(path, required=(completion_key, gold_key), error=VerifyInputError):
        if not isinstance(record[completion_key], str):
            raise VerifyInputError(f"{path}:{lineno}: {completion_key!r} must be a string")
        yield lineno, record


def _gold_answer(gold: Any) -> str:
    gold = str(gold)
    if "####" in gold:
        return extract_answer(gold) or gold.rsplit("####", 1)[1].strip()
    return gold.strip()


def _evaluate(lineno: int, record: dict, completion_key: str, gold_key: str) -> dict[str, Any]:
    completion, gold = record[completion_key], _gold_answer(record[gold_key])
    steps = _line_steps(completion)
    checks, first_bad = check_solution([s.text for s in steps])
    pred_strict, pred_flexible = extract_answer(completion), extract_answer(completion, "flexible")
    out = EvalRecord(
        id=str(record.get("id", lineno)), question=str(record.get("question", "")), gold=gold,
        completion=completion, steps=[s.to_dict() for s in steps],
        pred_strict=pred_strict, pred_flexible=pred_flexible,
        correct_strict=answers_match(pred_strict, gold), correct_flexible=answers_match(pred_flexible, gold),
        step_checks=[c.to_dict() for c in checks],
    ).to_dict()
    out["first_incorrect_step"] = first_bad
    return out


def verify_file(input_path: str | os.PathLike, output_path: str | os.PathLike, *,
                completion_key: str = "completion", gold_key: str = "answer") -> dict[str, Any]:
    """Verify every completion in a JSONL file and write one result per line.

    Each input line is a JSON object with the completion under ``completion_key``
    and the gold answer under ``gold_key`` (a bare answer, or a full GSM8K
    solution ending in ``#### N``); ``id`` and ``question`` are copied when present.
    Each output line is an :class:`~presrm.schema.EvalRecord` (steps split by
    lines, strict and flexible answers and correctness, per-step checks) plus
    ``first_incorrect_step``. The output is written to a temporary file and
    renamed, so a failed run leaves no partial output.

    Returns summary counts: records, correct_strict, correct_flexible, their
    accuracies, steps by verdict and records_with_incorrect_step.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "in.jsonl").write_text('{"completion": "3 + 4 = 7\\\\n#### 7", "answer": "7"}\\n')
    >>> verify_file(d / "in.jsonl", d / "out.jsonl")["correct_strict"]
    1

    Raises:
        VerifyInputError: a line is not valid JSON, not an object, or lacks a key;
            the message names the file and the line number.
    """
    src, dst = Path(input_path), Path(output_path)
    counts = {"records": 0, "correct_strict": 0, "correct_flexible": 0, "steps": 0, "steps_correct": 0,
              "steps_incorrect": 0, "steps_unverifiable": 0, "records_with_incorrect_step": 0}
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for lineno, record in _read_records(src, completion_key, gold_key):
                result = _evaluate(lineno, record, completion_key, gold_key)
                out.write(json.dumps(result, ensure_ascii=False) + "\n")
                counts["records"] += 1
                counts["correct_strict"] += result["correct_strict"]
                counts["correct_flexible"] += result["correct_flexible"]
                counts["records_with_incorrect_step"] += result["first_incorrect_step"] is not None
                for check in result["step_checks"]:
                    counts["steps"] += 1
                    counts["steps_" + check["verdict"]] += 1
        os.replace(tmp, dst)
    except OSError as e:  # reading errors are VerifyInputErrors already; this is the output side
        raise WriteError(f"{dst}: cannot write ({e.strerror or e}); any previous version is unchanged") from e
    finally:
        tmp.unlink(missing_ok=True)
    n = counts["records"]
    counts["accuracy_strict"] = counts["correct_strict"] / n if n else 0.0
    counts["accuracy_flexible"] = counts["correct_flexible"] / n if n else 0.0
    logger.info("verified %d records from %s: %d correct (strict)", n, src, counts["correct_strict"])
    return counts
