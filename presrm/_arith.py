"""Bounded exact arithmetic on untrusted text.

A whitelisted regex tokenizer turns text into tokens; a precedence-climbing
parser of our own turns a token slice into an exact sympy ``Rational``. Nothing
here ever evaluates text as code: numbers are built from digit strings the
tokenizer validated, operators come from a fixed table.

Every bound in :class:`Limits` is enforced while parsing; crossing one raises
:class:`Unverifiable`, which callers turn into an ``unverifiable`` verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from sympy import Integer, Rational

from presrm._numbers import CURRENCY, MAX_DIGITS, NUMBER, decimal_value, number_parts


@dataclass(frozen=True)
class Limits:
    """Bounds on the work spent on one call; past any of them the answer is ``unverifiable``.

    >>> Limits().max_digits
    30
    """

    max_chars: int = 4000
    """Longest step text (characters) that is examined at all."""
    max_digits: int = MAX_DIGITS
    """Most digits in one written number."""
    max_exponent: int = 100
    """Largest absolute integer exponent in ``a ^ n``."""
    max_bits: int = 4096
    """Largest numerator or denominator (in bits) of any intermediate value."""
    max_depth: int = 20
    """Deepest nesting of brackets and unary signs."""
    max_claims: int = 64
    """Most claims in one step."""
    max_work: int = 20_000
    """Most units of work in one call: a scanned token or a parsed operand each costs one.
    Counted, not timed, so that a step gets the same verdict on any machine and under any load;
    with the bounds above, it holds a call to a few tens of milliseconds of CPU time."""


DEFAULT_LIMITS = Limits()


class OutOfWork(Exception):
    """A call spent its :attr:`Limits.max_work`."""


class Budget:
    """The work left to one call (:attr:`Limits.max_work` to start); :meth:`spend` raises
    :class:`OutOfWork` once it is gone.

    >>> b = Budget(2); b.spend(); b.spend(); b.left
    0
    """

    __slots__ = ("left",)

    def __init__(self, units: int):
        self.left = units

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise OutOfWork


class Unverifiable(Exception):
    """A bound was crossed or the expression uses something we do not compute."""


class Malformed(Exception):
    """The token slice is not an arithmetic expression (so it is no claim at all)."""


class DivisionByZero(Exception):
    """The expression divides by zero."""


# --------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    rf"|(?P<num>{CURRENCY}?[ ]?{NUMBER}|[½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞])"
    r"|(?P<pct>(?:\.\.\.|…)?\\?%)"
    r"|(?P<op>\*\*|//|[-+*/^×÷·⋅∙−–∗]|\\(?:times|cdot|div)(?![A-Za-z]))"
    r"|(?P<eq>(?<![<>!=:])==?(?![=>])|≈|\\approx(?![A-Za-z]))"
    r"|(?P<lp>\\left\s*[(\[]|[(\[{])"
    r"|(?P<rp>\\right\s*[)\]]|[)\]}])"
    r"|(?P<frac>\\[dt]?frac(?![A-Za-z]))"
    r"|(?P<text>\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]{0,80}\})"
    r"|(?P<skip>\\(?:boxed|displaystyle)(?![A-Za-z])|\\[,;:! ()\[\]])"
    r"|(?P<word>[A-Za-z]+(?:'[A-Za-z]+)?)"
    r"|(?P<gap>.)",
    re.DOTALL,
)
_OP_SYMBOL = {
    "**": "^", "^": "^", "+": "+", "-": "-", "−": "-", "–": "-",
    "*": "*", "×": "*", "·": "*", "⋅": "*", "∙": "*", "∗": "*", "\\times": "*", "\\cdot": "*",
    "/": "/", "÷": "/", "\\div": "/", "//": "//",
}
_VULGAR = {
    "½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5), "⅗": (3, 5),
    "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8),
}
SCALES = {"cent": Rational(1, 100), "cents": Rational(1, 100), "thousand": Integer(1000),
          "million": Integer(10**6), "billion": Integer(10**9)}
"""Words that scale the number before them ("50 cents", "1.5 million")."""


class Token(NamedTuple):
    """One lexical token: ``kind`` is a group name of the tokenizer, ``sym`` a normalized operator."""

    kind: str
    text: str
    start: int
    end: int
    sym: str = ""

    @property
    def decimals(self) -> int:
        """Digits after the decimal point of a number token."""
        parts = number_parts(self.text)
        return len(parts[1]) if parts else 0


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into whitelisted tokens (whitespace and LaTeX spacing dropped).

    >>> [t.sym or t.text for t in tokenize("3 x 4 = 12")]
    ['3', 'x', '4', '=', '12']
    """
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or "gap"
        if kind in ("ws", "skip"):
            continue
        if kind == "text":
            kind = "word"
        raw = m.group()
        sym = _OP_SYMBOL.get(raw, "") if kind == "op" else ""
        tokens.append(Token(kind, raw, m.start(), m.end(), sym))
    return tokens


def number_value(token: Token, limits: Limits) -> Rational:
    """The exact value of a number token, built from its validated digits.

    >>> number_value(tokenize("$1,234.50")[0], DEFAULT_LIMITS)
    2469/2
    """
    if token.text in _VULGAR:
        return Rational(*_VULGAR[token.text])
    parts = number_parts(token.text)
    if parts is None:  # pragma: no cover - the tokenizer only emits matching text
        raise Malformed(token.text)
    whole, frac = parts
    if len(whole) > 1 and whole[0] == "0":
        raise Malformed("leading zero: a code or a clock time, not a quantity")
    value = decimal_value(whole, frac, max_digits=limits.max_digits)
    if value is None:
        raise Unverifiable(f"number with more than {limits.max_digits} digits")
    return value


# --------------------------------------------------------------------------- parser

_BINARY = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}
_PERCENT = Rational(1, 100)
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class Parser:
    """Precedence-climbing parser over a token slice, producing an exact sympy number.

    Grammar: ``expr := unary (binop unary)*`` with ``+ -`` below ``* /``;
    ``unary := [+-] unary | primary [%]* [^ unary]`` so ``^`` binds tighter than a
    sign and is right-associative; a primary is a number, a bracketed expression or
    ``\\frac{a}{b}``, optionally followed by ``%``. A number or ``)`` directly
    followed by ``(`` multiplies.

    >>> Parser(tokenize("2 (3 + 4) ^ 2 * 20%"), DEFAULT_LIMITS, Budget(100)).parse()
    98/5
    """

    def __init__(self, tokens: list[Token], limits: Limits, budget: Budget):
        self.toks = tokens
        self.pos = 0
        self.limits = limits
        self.budget = budget

    def parse(self) -> Rational:
        """Parse the whole slice; raise :class:`Malformed` if anything is left over."""
        if not self.toks:
            raise Malformed("empty")
        value, _ = self._expr(0, 0)
        if self.pos != len(self.toks):
            raise Malformed(f"unexpected {self.toks[self.pos].text!r}")
        return value

    def _peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _binary_op(self) -> str | None:
        tok = self._peek()
        if tok is None:
            return None
        if tok.kind == "op":
            return tok.sym
        if tok.kind in ("lp", "frac") and self.pos > 0 and self.toks[self.pos - 1].kind in ("num", "rp"):
            return "implicit"
        return None

    def _expr(self, min_prec: int, depth: int) -> tuple[Rational, bool]:
        """Return the value and whether it is a bare percentage (``20%``)."""
        left, left_pct = self._unary(depth)
        while True:
            op = self._binary_op()
            prec = _BINARY["*" if op == "implicit" else op] if op in _BINARY or op == "implicit" else 0
            if prec == 0 or prec < min_prec:
                return left, left_pct
            if op != "implicit":
                self.pos += 1
            right, right_pct = self._expr(prec + 1, depth)
            if op in ("+", "-") and left_pct != right_pct:
                raise Unverifiable("ambiguous percentage in a sum")
            left, left_pct = self._apply(op, left, right), False

    def _unary(self, depth: int) -> tuple[Rational, bool]:
        if depth > self.limits.max_depth:
            raise Unverifiable(f"nesting deeper than {self.limits.max_depth}")
        self.budget.spend()
        tok = self._peek()
        if tok is not None and tok.kind == "op" and tok.sym in ("+", "-"):
            self.pos += 1
            value, _ = self._unary(depth + 1)
            return (-value if tok.sym == "-" else value), False
        value = self._primary(depth)
        is_pct = False
        while (tok := self._peek()) is not None and tok.kind in ("pct", "scale"):
            self.pos += 1
            is_pct = tok.kind == "pct"
            value = value * (_PERCENT if is_pct else SCALES[tok.sym])
        if (tok := self._peek()) is not None and tok.kind == "op" and tok.sym == "^":
            self.pos += 1
            exponent, _ = self._unary(depth + 1)
            return self._apply("^", value, exponent), False
        return value, is_pct

    def _primary(self, depth: int) -> Rational:
        tok = self._peek()
        if tok is None:
            raise Malformed("missing operand")
        self.pos += 1
        if tok.kind == "num":
            value = number_value(tok, self.limits)
            if self._tight_fraction():
                den = number_value(self.toks[self.pos + 1], self.limits)
                self.pos += 2
                return self._apply("/", value, den)
            return value
        if tok.kind == "lp":
            return self._group(tok.text[-1], depth)
        if tok.kind == "frac":
            num = self._group_required(depth)
            den = self._group_required(depth)
            return self._apply("/", num, den)
        raise Malformed(f"unexpected {tok.text!r}")

    def _tight_fraction(self) -> bool:
        """Whether the number just read starts a fraction written without spaces, ``a/b``.

        Such a fraction is one operand: ``25 / 1/3`` is ``25 / (1/3)``. A longer
        unspaced chain (``10/2/5``) or a power (``1/2^3``) keeps the usual rules.
        """
        k = self.pos
        toks = self.toks
        if k + 1 >= len(toks) or toks[k].sym != "/" or toks[k + 1].kind != "num":
            return False
        if toks[k - 1].end != toks[k].start or toks[k].end != toks[k + 1].start:
            return False
        if k >= 2 and toks[k - 2].sym == "/" and toks[k - 2].end == toks[k - 1].start:
            return False
        after = toks[k + 2] if k + 2 < len(toks) else None
        if after is None:
            return True
        glued_slash = after.sym == "/" and after.start == toks[k + 1].end
        return not (glued_slash or after.sym == "^" or after.kind in ("pct", "scale"))

    def _group_required(self, depth: int) -> Rational:
        tok = self._peek()
        if tok is None or tok.kind != "lp":
            raise Malformed("\\frac needs two groups")
        self.pos += 1
        return self._group(tok.text[-1], depth)

    def _group(self, opener: str, depth: int) -> Rational:
        value, _ = self._expr(0, depth + 1)
        tok = self._peek()
        if tok is None or tok.kind != "rp" or tok.text[-1] != _CLOSERS[opener]:
            raise Malformed("unbalanced brackets")
        self.pos += 1
        return value

    def _apply(self, op: str, left: Rational, right: Rational) -> Rational:
        if op == "+":
            result = left + right
        elif op == "-":
            result = left - right
        elif op in ("*", "implicit"):
            result = left * right
        elif op in ("/", "//"):
            if right == 0:
                raise DivisionByZero("division by zero")
            result = left / right
            if op == "//":
                result = Integer(result.p // result.q)
        else:
            result = self._power(left, right)
        if max(result.p.bit_length(), result.q.bit_length()) > self.limits.max_bits:
            raise Unverifiable(f"intermediate value larger than {self.limits.max_bits} bits")
        return result

    def _power(self, base: Rational, exponent: Rational) -> Rational:
        if exponent.q != 1:
            raise Unverifiable("non-integer exponent")
        n = int(exponent.p)
        if abs(n) > self.limits.max_exponent:
            raise Unverifiable(f"exponent larger than {self.limits.max_exponent}")
        if max(base.p.bit_length(), base.q.bit_length()) * abs(n) > self.limits.max_bits:
            raise Unverifiable(f"power larger than {self.limits.max_bits} bits")
        if base == 0 and n < 0:
            raise DivisionByZero("zero to a negative power")
        return base ** Integer(n)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Literal:
    """A side of a claim that is one written number: its value, decimals and whether it has ``%``."""

    value: Rational
    decimals: int
    percent: bool


def as_literal(tokens: list[Token], limits: Limits) -> Literal | None:
    """The :class:`Literal` if ``tokens`` is a single (signed, maybe percent) number, else None."""
    body = tokens[1:] if tokens and tokens[0].kind == "op" and tokens[0].sym in "+-" else tokens
    percent = len(body) == 2 and body[1].kind == "pct"
    if not body or body[0].kind != "num" or len(body) != 1 + percent:
        return None
    value = number_value(body[0], limits)
    if tokens[0].sym == "-":
        value = -value
    return Literal(value * _PERCENT if percent else value, body[0].decimals, percent)


def rounding_match(value: Rational, literal: Literal, *, approx: bool = False) -> str | None:
    """How ``literal`` states ``value`` at its written precision, or None if it does not.

    A literal written with ``d`` decimals (or any literal in an ``≈`` claim)
    accepts ``value`` rounded to ``d`` places (either way at an exact half) or
    truncated toward zero to ``d`` places. Percent literals are compared on
    the percent scale.

    >>> rounding_match(Rational(10, 3), Literal(Rational(333, 100), 2, False))
    'rounded to 2 decimal places'
    >>> rounding_match(Rational(2, 3), Literal(Rational(66, 100), 2, False))
    'truncated to 2 decimal places'
    """
    if literal.decimals == 0 and not approx:
        return None
    scale = 10 ** literal.decimals * (100 if literal.percent else 1)
    scaled_p, q = int(value.p) * scale, int(value.q)
    target = literal.value * scale
    if target.q != 1:  # pragma: no cover - a literal with d decimals scales to an integer
        return None
    r = int(target.p)
    if 2 * abs(scaled_p - r * q) <= q:
        return f"rounded to {literal.decimals} decimal places"
    truncated = abs(scaled_p) // q * (1 if scaled_p >= 0 else -1)
    if truncated == r:
        return f"truncated to {literal.decimals} decimal places"
    return None


def exact(value: Rational) -> str:
    """The exact value as sympy prints it (``9``, ``-10/3``), without going through its printer."""
    return str(value.p) if value.q == 1 else f"{value.p}/{value.q}"


def show(value: Rational) -> str:
    """A value for a reason string: the exact rational, plus a decimal if it is not an integer."""
    if value.q == 1:
        return exact(value)
    return f"{exact(value)} (≈{float(value):.6g})"
