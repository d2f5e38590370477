"""How a number is written, and its exact value: the one number reader of presrm.

Every module that reads numbers out of text builds on these patterns and on
:func:`parse_number` (the verifier's extraction, matching and arithmetic,
maj@k's voting, the judges' reply parsers, the report), so ``1,000``,
``$5.50``, ``-3``, ``.5``, ``3/4`` and ``1 1/2`` are read alike everywhere.
The public names are re-exported by :mod:`presrm.verify`.

Digits are ASCII ``0-9`` only (``\\d`` would also take other scripts' digits).

>>> parse_number("$1,234.50"), parse_number("-3/4"), parse_number("1 1/2"), parse_number("5/00")
(2469/2, -3/4, 3/2, None)
>>> [m.group() for m in NUMBER_RE.finditer("1,000 pens at $2.50, .5 each")]
['1,000', '2.50', '.5']
"""

from __future__ import annotations

import re

from sympy import Integer, Rational

MAX_DIGITS = 30
"""Most digits a written number may have (numerator and denominator together for a fraction)."""

INTEGER = r"(?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+|[0-9]+)"
"""Digits, optionally grouped by thousands separators (``1,000``; ``1,00`` is two numbers)."""
NUMBER = rf"(?:{INTEGER}(?:\.[0-9]+)?|\.[0-9]+)"
"""An unsigned decimal number: ``12``, ``1,000``, ``2.5``, ``.5``."""
FRACTION_TAIL = r"(?:[ \t]+[0-9]+/[0-9]+|/[0-9]+)"
"""What turns a number into a fraction: ``/4`` (``3/4``) or `` 1/2`` (the mixed number ``1 1/2``)."""
CURRENCY = r"(?:\\\$|[$€£¥])"
"""A currency sign before a number: ``$``, ``\\$`` (LaTeX), ``€``, ``£``, ``¥``."""
NUMBER_RE = re.compile(NUMBER)

_SIGNED = (
    rf"(?P<sign>[-−+])?\s*(?:{CURRENCY}\s*(?P<sign2>[-−])?\s*)?"
    r"(?:(?P<whole>[0-9]+)[ \t]+(?P<mn>[0-9]+)\s*/\s*(?P<md>[0-9]+)"
    r"|(?P<fn>[0-9]+)\s*/\s*(?P<fd>[0-9]+)"
    rf"|(?P<int>{INTEGER})?(?:\.(?P<dec>[0-9]+))?)"
)
SIGNED_NUMBER = re.sub(r"\(\?P<\w+>", "(?:", _SIGNED)
"""What :func:`parse_number` reads, as a pattern without groups, to embed in larger patterns.

A sign (``-``, ``−``, ``+``; or ``-`` after a currency sign), a currency sign,
then a mixed number, a fraction or a decimal number. It also matches the empty
string (the decimal's parts are optional); :func:`parse_number` then says None.
"""
_SIGNED_RE = re.compile(rf"\s*{_SIGNED}\s*")
_PARTS_RE = re.compile(rf"{CURRENCY}?[ ]?(?P<int>{INTEGER})?(?:\.(?P<dec>[0-9]+))?")


def decimal_value(int_part: str | None, decimals: str | None, *, max_digits: int = MAX_DIGITS) -> Rational | None:
    """The exact value of ``int_part.decimals`` (thousands separators allowed); None without digits or past
    ``max_digits`` digits.

    >>> decimal_value("1,234", "50"), decimal_value(None, "5"), decimal_value("", None)
    (2469/2, 1/2, None)
    """
    digits = (int_part or "").replace(",", "") + (decimals or "")
    if not digits or len(digits) > max_digits:
        return None
    return Rational(int(digits), 10 ** len(decimals or ""))


def number_parts(text: str) -> tuple[str, str] | None:
    """The digits before and after the point of one unsigned number, currency sign and separators dropped.

    >>> number_parts("$1,234.50"), number_parts(".5"), number_parts("1,00")
    (('1234', '50'), ('', '5'), None)
    """
    m = _PARTS_RE.fullmatch(text)
    if m is None or not (m.group("int") or m.group("dec")):
        return None
    return (m.group("int") or "").replace(",", ""), m.group("dec") or ""


def _ratio(num: str, den: str, max_digits: int) -> Rational | None:
    if len(num) + len(den) > max_digits or int(den) == 0:
        return None
    return Rational(int(num), int(den))


def parse_number(text: str, *, max_digits: int = MAX_DIGITS) -> Rational | None:
    """The exact value of one plainly written number, or None when ``text`` is anything else.

    Reads an optional sign (``-``, ``−``, ``+``, or a minus after the currency
    sign), an optional currency sign (:data:`CURRENCY`), then a decimal number
    (:data:`NUMBER`: thousands separators, ``.5``), a fraction ``3/4`` or a mixed
    number ``1 1/2``; spaces around the whole are ignored. Nothing is ever
    evaluated: the value is built from the digit strings.

    Note:
        None, never an exception, for a zero denominator (``5/0``, ``5/00``),
        more than ``max_digits`` digits, or any other text (``1,00``, ``2e5``,
        ``five``). Units, percent signs and exponents are the caller's business.

    >>> parse_number("-$5"), parse_number("$-5"), parse_number(" 1,000 "), parse_number("7 apples")
    (-5, -5, 1000, None)
    """
    m = _SIGNED_RE.fullmatch(text)
    if m is None:
        return None
    if m.group("whole"):
        part = _ratio(m.group("mn"), m.group("md"), max_digits - len(m.group("whole")))
        value = None if part is None else Integer(int(m.group("whole"))) + part
    elif m.group("fn"):
        value = _ratio(m.group("fn"), m.group("fd"), max_digits)
    else:
        value = decimal_value(m.group("int"), m.group("dec"), max_digits=max_digits)
    if value is None:
        return None
    negative = m.group("sign") in ("-", "−") or m.group("sign2") is not None
    return -value if negative else value
