"""Property-based tests of presrm.verify: hostile input never crashes, hangs or executes anything,
and generated arithmetic is judged exactly. About 12,600 generated inputs in all; extract_answer and
answers_match run in the main thread and in a worker thread (where signal timeouts do not work)."""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import threading
import time
from fractions import Fraction

import math_verify.parser
import pytest
import sympy
import sympy.parsing.sympy_parser
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from presrm._mv_worker import mv_match
from presrm.verify import MV_TIMEOUT_S, answers_match, check_step, extract_answer

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
TIME_BOUND_S = 1.0
THREAD_SLACK_S = 0.5  # a math-verify call returns within MV_TIMEOUT_S plus one line each way through a pipe


def _forbidden(*_args, **_kwargs):
    raise AssertionError("code execution attempted")


_GUARDED = [(builtins, "eval"), (builtins, "exec"), (os, "system"), (os, "popen"),
            (sympy, "sympify"), (sympy.parsing.sympy_parser, "parse_expr")]


@contextlib.contextmanager
def no_code_execution():
    """Fail loudly if the verifier tries to run text as code (hypothesis itself uses exec, so
    only the call under test is guarded; math-verify legitimately parses with sympy, so
    answers_match is not guarded)."""
    saved = [getattr(target, name) for target, name in _GUARDED]
    for target, name in _GUARDED:
        setattr(target, name, _forbidden)
    try:
        yield
    finally:
        for (target, name), original in zip(_GUARDED, saved, strict=True):
            setattr(target, name, original)


def timed(fn, *args, guard: bool = True, thread: bool = False, bound: float = TIME_BOUND_S):
    """``fn(*args)``, in a worker thread if ``thread`` (where signal timeouts do not work); back within ``bound``."""
    start = time.monotonic()
    with no_code_execution() if guard else contextlib.nullcontext():
        result = in_thread(fn, *args, bound=bound) if thread else fn(*args)
    elapsed = time.monotonic() - start
    assert elapsed < bound, f"{fn.__name__} took {elapsed:.2f}s"
    return result


MV_TRAPS = [
    "\\binom{10000000}{5000000}", "The answer is $\\binom{10000000}{5000000}$.", "{10000000 \\choose 5000000}",
    "10000000!", "\\frac{1}{3}^{99999}", "(10^{100})^{100}", "9^{9^{9}}", "2^{2^{2^{2^{2}}}}", "x^{10^{10}}",
    "\\sum_{k=1}^{10^9} k", "\\prod_{k=1}^{10^9} k", "\\int_0^1 x dx", "\\Gamma(10^9)", "factorial(10**7)",
    "\\sqrt{10^{9999}}", "1e999999", "10.5E99999", "\\lim_{n\\to\\infty} n", "\\mathbb{Z}^{9999}",
    "\\boxed{\\binom{10000000}{5000000}}", "\\(\\binom{9999999}{4999999}\\)", "9" * 40,
]


@pytest.fixture(scope="module", autouse=True)
def _math_verify_worker_started():
    """The first LaTeX answer in a process starts the math-verify worker (once); the bounds are per call after."""
    assert answers_match("\\frac{1}{2}", "0.5")


def in_thread(fn, *args, bound: float = TIME_BOUND_S):
    """Run ``fn(*args)`` in a worker thread (where signal timeouts do not work) and require it back in time."""
    out: dict = {}

    def work():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            out["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), f"{fn.__name__}{args!r} still running after {bound} s off the main thread"
    assert time.monotonic() - start < bound
    if "error" in out:
        raise out["error"]
    return out["value"]


WHERE = pytest.mark.parametrize("thread", [False, True], ids=["main thread", "worker thread"])


def assert_valid(check):
    assert check.verdict in ("correct", "incorrect", "unverifiable")
    assert check.reason != "internal error"
    for claim in check.claims:
        assert claim.ok in (True, False, None)
        assert (claim.value is None) == (claim.ok is None) or claim.ok is False


# --------------------------------------------------------------------------- hostile text

CODE = [
    "__import__('os').system('x')", "exec('import os')", "eval('1+1') = 2", "().__class__.__bases__[0]",
    "lambda: 0", "import os; os.system('rm -rf /')", "open('/etc/passwd').read()", "1 if True else 2 = 1",
    "{{7*7}} = 49", "${7*7} = 49", "`id` = 0", "os.system('x') = 0", "$(reboot) = 1",
]
HUGE = ["9^9^9^9", "10**10**10", "2^(2^(2^(2^10)))", "(10^100)^100", "99999^99999", "1e999999",
        "9**9**9 = 1", "10^-1000 = 0", "2^0.5 = 1.41", "0^-1 = 1", "(-8)^(1/3) = -2"]
UNICODE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
ARITH_CHARS = st.text(alphabet="0123456789+-*/^()=., x%$<>{}[]\\fracbox", max_size=300)


def hostile_texts():
    junk = st.one_of(
        st.sampled_from(CODE + HUGE),
        st.builds(lambda n: "(" * n + "1" + ")" * n + " = 1", st.integers(0, 10_000)),
        st.builds(lambda n: "(" * n + "1 = 1", st.integers(0, 10_000)),
        st.builds(lambda n, d: d * n + " + 1 = 2", st.integers(1, 1_000_000), st.sampled_from("19")),
        st.builds(lambda n: "9^" * n + "9 = 1", st.integers(1, 2_000)),
        st.builds(lambda n: "-" * n + "1 = 1", st.integers(1, 3_000)),
        st.builds(lambda n: "1 = " * n + "1", st.integers(1, 2_000)),
        st.builds(lambda n: "<<1+1=2>>" * n, st.integers(1, 600)),
        st.builds(lambda n: "2 apples x " * n + "2 = 4", st.integers(1, 500)),
        UNICODE,
        ARITH_CHARS,
    )
    return st.builds(lambda parts: " ".join(parts), st.lists(junk, min_size=1, max_size=3))


@settings(max_examples=2500, **SETTINGS)
@given(hostile_texts())
def test_check_step_survives_hostile_text(text):
    assert_valid(timed(check_step, text))


@settings(max_examples=3000, **SETTINGS)
@given(st.text(max_size=400))
def test_check_step_survives_any_text(text):
    assert_valid(timed(check_step, text))


@WHERE
@settings(max_examples=1000, **SETTINGS)
@given(hostile_texts())
def test_extract_answer_survives_hostile_text(thread, text):
    for mode in ("strict", "flexible"):
        found = timed(extract_answer, text, mode, thread=thread)
        assert found is None or isinstance(found, str)


@WHERE
@settings(max_examples=600, **SETTINGS)
@given(st.sampled_from(CODE + HUGE + MV_TRAPS) | st.text(max_size=60) | ARITH_CHARS.map(lambda s: s[:60]),
       st.sampled_from(["0", "1", "1000", "-3", "2.5", "x", "\\frac{1}{2}"]))
def test_answers_match_survives_hostile_text(thread, pred, gold):
    bound = MV_TIMEOUT_S + THREAD_SLACK_S  # a LaTeX answer may wait for math-verify's worker
    assert timed(answers_match, pred, gold, guard=False, thread=thread, bound=bound) in (True, False)


# --------------------------------------------------------------------------- exact arithmetic

# An expression tree is (text, exact value or None); the value is computed here with Fraction
# by the tree structure itself, so the test never parses text.
def _leaf():
    ints = st.integers(0, 10**6).map(lambda n: (str(n), Fraction(n)))
    decimals = st.builds(lambda n, d: (f"{n // 10**d}.{n % 10**d:0{d}d}", Fraction(n, 10**d)),
                         st.integers(0, 10**5), st.integers(1, 3))
    return ints | decimals


def _combine(children):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "/": lambda a, b: a / b if b else None}

    def build(left, op, right, spaced):
        value = None if left[1] is None or right[1] is None else ops[op](left[1], right[1])
        sep = " " if spaced else ""
        return f"({left[0]}){sep}{op}{sep}({right[0]})", value

    return st.builds(build, children, st.sampled_from(sorted(ops)), children, st.booleans())


EXPRESSIONS = st.recursive(_leaf(), _combine, max_leaves=8)


def _decimal(value: Fraction, places: int) -> str:
    scaled = value * 10**places
    rounded = (abs(scaled.numerator) * 2 + scaled.denominator) // (2 * scaled.denominator)
    sign = "-" if value < 0 and rounded else ""
    text = str(rounded).rjust(places + 1, "0")
    return f"{sign}{text[:-places]}.{text[-places:]}"


@settings(max_examples=2000, **SETTINGS)
@given(EXPRESSIONS, st.integers(1, 6))
def test_generated_claims_are_judged_exactly(expr, places):
    text, value = expr
    # no division by zero, nothing too big to write, and an operation (a bare number is no claim)
    assume(value is not None and abs(value) <= 10**20 and text.startswith("("))
    if value.denominator == 1:
        right, wrong = str(value), str(value + 1)
    else:
        right, wrong = _decimal(value, places), _decimal(value + Fraction(1, 10**places) * 3, places)
    assert timed(check_step, f"{text} = {right}").verdict == "correct", (text, right)
    assert timed(check_step, f"So {text} = {wrong} in total.").verdict == "incorrect", (text, wrong)


@settings(max_examples=1500, **SETTINGS)
@given(st.integers(-10**9, 10**9), st.integers(0, 99),
       st.sampled_from(["plain", "comma", "dollar", "boxed", "zeros"]))
def test_answer_formats_match(n, cents, style):
    gold = f"{n}.{cents:02d}" if cents else str(n)
    sign, digits = ("-" if n < 0 else ""), f"{abs(n):,}"
    tail = f".{cents:02d}" if cents else ""
    pred = {
        "plain": gold,
        "comma": f"{sign}{digits}{tail}",
        "dollar": f"{sign}${digits}{tail}",
        "boxed": f"\\boxed{{{gold}}}",
        "zeros": f"{gold}{'0' if cents else '.00'}",
    }[style]
    assert answers_match(pred, gold)
    assert not answers_match(str(n + 7), gold)
    assert extract_answer(f"Some work.\n#### {pred}") is not None


@pytest.mark.parametrize("text", MV_TRAPS + CODE + HUGE)
def test_traps_are_bounded_in_a_worker_thread(text):
    bound = MV_TIMEOUT_S + THREAD_SLACK_S
    for mode in ("strict", "flexible"):
        found = in_thread(extract_answer, text, mode)
        assert found is None or isinstance(found, str)
    for pred in {text, extract_answer(text) or text}:
        for gold in ("5", "\\frac{1}{2}", text):
            assert in_thread(answers_match, pred, gold, bound=bound) in (True, False)
    assert in_thread(check_step, text).verdict in ("correct", "incorrect", "unverifiable")



def test_math_verify_worker_hands_parse_expr_no_answer_text(monkeypatch):
    """Only number tokens of latex2sympy's grammar reach parse_expr (through sympify), never the answer's text:
    math-verify's own expression extractor, which would hand it ``2**3+1``, is off."""
    calls = []
    for module in (math_verify.parser, sympy.parsing.sympy_parser):
        original = module.parse_expr
        monkeypatch.setattr(module, "parse_expr", lambda text, *a, _f=original, **k: (calls.append(text),
                                                                                        _f(text, *a, **k))[1])
    for pred, gold in [("$x$ 2^3+1", "$9$"), ("3*4 = 12", "$12$"), ("$3*4$", "$12$"), ("\\frac{3}{4}", "0.75")]:
        assert mv_match(pred, gold, None) in (True, False)
    assert all(re.fullmatch(r"[0-9.]+", text) for text in calls), calls
