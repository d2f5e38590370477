"""Find arithmetic claims (``a = b``, chains, calculator annotations) in prose and check them.

The scanner walks the token stream and groups arithmetic tokens into *runs*,
skipping unit words between an operand and an operator ("5 apples x 3") and
reading word operators ("times", "of", "divided by"). Each run is split on
``=``; every pair of neighbouring sides is one claim. A side next to a
variable (``2x``, ``y + 3``) or a bare literal on both sides (``1 hour = 60
minutes``) is no claim, so prose and algebra do not produce false verdicts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from presrm._arith import (
    SCALES,
    Budget,
    DivisionByZero,
    Limits,
    Literal,
    Malformed,
    Parser,
    Token,
    Unverifiable,
    as_literal,
    exact,
    rounding_match,
    show,
    tokenize,
)
from presrm.schema import Claim

_ANNOTATION_RE = re.compile(r"<<([^<>]{0,400})>>")
_HAS_EQUALS = re.compile(r"=|≈|\\approx")
_OPERAND_KINDS = ("num", "pct", "rp", "scale")
_OPERAND_START = ("num", "lp", "frac")
_WORD_OPS = {"x": "*", "times": "*", "of": "*", "plus": "+", "minus": "-"}
_TWO_WORD_OPS = {("divided", "by"): "/", ("multiplied", "by"): "*", ("out", "of"): "/"}
_STOP_WORDS = frozenset({
    "and", "or", "so", "then", "is", "are", "was", "were", "be", "but", "if", "because", "since",
    "therefore", "thus", "which", "that", "equals", "gives", "makes", "means", "leaves", "get", "gets",
    "got", "has", "have", "had", "in", "for", "to", "from", "on", "at", "with",
})
_LABEL_WORDS = frozenset({
    "day", "week", "month", "year", "step", "page", "chapter", "part", "level", "round", "grade", "room",
    "question", "problem", "case", "option", "row", "column", "line", "figure", "table", "days", "weeks",
    "months", "years", "steps", "pages", "chapters", "parts", "levels", "rounds",
})
_FUNCTION_MARKS = frozenset("√∛∜|!_^\\")
_LETTER_UNITS = frozenset("mhsgl")  # metres, hours, seconds, grams, litres: units even as one letter
_MAX_UNIT_WORDS = 4


@dataclass
class Run:
    """Consecutive arithmetic tokens; ``start_poisoned``/``end_poisoned``: that end continues prose
    or a variable, so the side there is no claim's side."""

    tokens: list[Token]
    start_poisoned: bool = False
    end_poisoned: bool = False
    after_word: bool = False


def _ends_operand(cur: list[Token]) -> bool:
    return bool(cur) and cur[-1].kind in _OPERAND_KINDS


def _glued(left: Token | None, right: Token | None) -> bool:
    return left is not None and right is not None and left.end == right.start


def _at(toks: list[Token], i: int) -> Token | None:
    return toks[i] if 0 <= i < len(toks) else None


def _segment_has_operator(cur: list[Token]) -> bool:
    for tok in reversed(cur):
        if tok.kind == "eq":
            return False
        if tok.kind in ("op", "pct", "frac"):
            return True
    return False


def _is_share(cur: list[Token]) -> bool:
    """Whether ``cur`` ends in a percentage or a fraction, the only things "of" multiplies ("1/2 of 30")."""
    if cur[-1].kind in ("pct", "rp"):
        return True
    return len(cur) >= 3 and cur[-1].kind == "num" and cur[-2].sym == "/" and cur[-3].kind == "num"


def _word_op(toks: list[Token], i: int, cur: list[Token]) -> tuple[Token, int] | None:
    """A word used as an operator at ``toks[i]`` ("times", "20 percent", "50 cents", "divided by")."""
    if not _ends_operand(cur) or toks[i].kind != "word":
        return None
    tok, word = toks[i], toks[i].text.lower()
    if word == "percent":
        return Token("pct", tok.text, tok.start, tok.end), i + 1
    if word in SCALES:
        return Token("scale", tok.text, tok.start, tok.end, word), i + 1
    nxt, after = _at(toks, i + 1), _at(toks, i + 2)
    if word == "of" and not _is_share(cur):
        return None
    if word in _WORD_OPS and nxt is not None and nxt.kind in _OPERAND_START:
        return Token("op", tok.text, tok.start, tok.end, _WORD_OPS[word]), i + 1
    pair = (word, nxt.text.lower()) if nxt is not None and nxt.kind == "word" else None
    if pair in _TWO_WORD_OPS and after is not None and after.kind in _OPERAND_START:
        return Token("op", tok.text + " " + nxt.text, tok.start, nxt.end, _TWO_WORD_OPS[pair]), i + 2
    return None


def _unit_skip(toks: list[Token], i: int, cur: list[Token]) -> int | None:
    """Index after unit words ("apples", "dollars per hour") that sit between an operand and an operator."""
    if not _ends_operand(cur):
        return None
    j = i
    while j < len(toks) and toks[j].kind == "word" and j - i <= _MAX_UNIT_WORDS:
        if j > i and _word_op(toks, j, cur):
            return j
        word, nxt = toks[j].text.lower(), _at(toks, j + 1)
        letter_unit = toks[j].text in _LETTER_UNITS and not _glued(toks[j - 1], toks[j])  # "5 m", not "5m"
        variable = len(word) == 1 and not letter_unit
        if variable or word in _STOP_WORDS or (_glued(toks[j], nxt) and nxt.sym == "/"):
            return None  # a variable, prose, or a compound unit such as "km/h" or "minutes/100 meters"
        j += 1
    nxt = _at(toks, j)
    if nxt is None or j - i > _MAX_UNIT_WORDS:
        return None
    if nxt.kind == "op" or (nxt.kind == "eq" and _segment_has_operator(cur)):
        return j
    return None


def _start_poisoned(toks: list[Token], i: int) -> bool:
    """Whether a run starting at ``toks[i]`` continues something on its left (variable, label, number)."""
    tok, prev = toks[i], _at(toks, i - 1)
    if prev is None:
        return tok.kind == "op" and tok.sym != "-"
    if tok.kind == "op":
        return tok.sym != "-" or prev.kind in ("word",) + _OPERAND_KINDS
    before = _at(toks, i - 2)
    if prev.kind == "rp":
        return before is not None and before.kind in _OPERAND_KINDS  # "(1/2) 278", but not "a) 3"
    if prev.kind in _OPERAND_KINDS:
        return True  # "$100 000", "13,2000": digits grouped in a way we do not read
    if prev.kind == "word":
        return _glued(prev, tok) or prev.text.lower() in _LABEL_WORDS  # "x2", "sqrt(", "Day 2"
    if _glued(prev, tok) and prev.text in _FUNCTION_MARKS:
        return True  # "√(144)"
    if prev.text == ":" and before is not None and before.kind == "num":
        return _glued(before, prev) and _glued(prev, tok)  # a clock time "6:48"
    return (prev.text == "," and before is not None and before.kind == "num" and _glued(before, prev)
            and len(tok.text) == 3 and tok.text.isdigit())  # "14, 400": a mistyped thousands separator


def _end_poisoned_by(cur: list[Token], nxt: Token | None, after: Token | None) -> bool:
    """Whether the token ``nxt`` that ends a run continues its last operand ("2y", "18 000", "8:20")."""
    if not cur or nxt is None:
        return False
    if nxt.kind == "word":
        return _glued(cur[-1], nxt) and len(nxt.text) == 1
    if nxt.kind == "num":
        return True
    return nxt.text in (":", ",") and _glued(cur[-1], nxt) and _glued(nxt, after) and after.kind == "num"


def _mixed_number(toks: list[Token], i: int, cur: list[Token]) -> int | None:
    """End index of ``b/c`` when ``cur[-1] [and] b/c`` is a mixed number like ``2 1/2``."""
    whole = cur[-1]
    if whole.kind != "num" or not whole.text.isdigit() or (len(cur) > 1 and cur[-2].sym in ("/", "^")):
        return None
    if toks[i].kind == "word" and toks[i].text == "and":
        i += 1
    if i + 2 >= len(toks) or toks[i + 1].sym != "/" or toks[i + 2].kind != "num":
        return None
    num, den = toks[i], toks[i + 2]
    if not (num.text.isdigit() and den.text.isdigit() and int(num.text) < int(den.text)):
        return None
    after = toks[i + 3] if i + 3 < len(toks) else None
    if after is not None and (after.kind in ("lp", "pct", "frac") or after.sym == "^"):
        return None
    return i + 3


def _mixed_tokens(whole: Token, num: Token, slash: Token, den: Token) -> list[Token]:
    """``a b/c`` as ``(a + b/c)`` tokens."""
    return [
        Token("lp", "(", whole.start, whole.start), whole, Token("op", "+", num.start, num.start, "+"),
        num, slash, den, Token("rp", ")", den.end, den.end),
    ]


class _Scanner:
    """Walks the tokens once, growing the current run and closing it at prose boundaries."""

    def __init__(self, toks: list[Token], budget: Budget):
        self.toks = toks
        self.budget = budget
        self.runs: list[Run] = []
        self.run = Run([])
        self.dangling = False  # the last run ended in an operator followed by words: "7 + Shonda (1) + 2"

    def scan(self) -> list[Run]:
        i = 0
        while i < len(self.toks):
            self.budget.spend()
            kind = self.toks[i].kind
            if kind == "word" or (kind == "num" and _ends_operand(self.run.tokens)):
                i = self._joined(i)
            elif kind in ("num", "pct", "op", "eq", "lp", "rp", "frac"):
                i = self._arith(i)
            else:
                self.close(i)
                self.dangling = False
                i += 1
        self.close(len(self.toks))
        return self.runs

    def close(self, i: int) -> None:
        """End the current run before ``toks[i]``; keep it if it has an ``=``."""
        cur, nxt = self.run.tokens, _at(self.toks, i)
        end_poisoned = _end_poisoned_by(cur, nxt, _at(self.toks, i + 1))
        if cur and cur[-1].text in ("*", "**") and len(cur) > 1 and _glued(cur[-2], cur[-1]) \
                and not (_glued(cur[-1], nxt) and nxt.kind == "word"):
            cur.pop()  # markdown emphasis, not an operator
        while cur and cur[-1].kind == "lp":
            cur.pop()  # "= 13 (the remaining cookies)"
        if any(t.kind == "eq" for t in cur):
            self.run.end_poisoned = end_poisoned
            self.runs.append(self.run)
        self.run = Run([])

    def _arith(self, i: int) -> int:
        tok, cur = self.toks[i], self.run.tokens
        if tok.sym == "/" and _glued(tok, _at(self.toks, i + 1)) and self.toks[i + 1].kind == "word":
            skip = _unit_skip(self.toks, i + 1, cur)
            if skip is not None:
                return skip  # a rate unit: "$15/hour * 40 hours"
        if not cur:
            prev = _at(self.toks, i - 1)
            if tok.kind == "rp":
                return i + 1  # the end of a bracket opened in prose
            times = _glued(prev, tok) and prev.kind in ("word", *_OPERAND_KINDS)
            if tok.text in ("*", "**") and not times:
                return i + 1  # markdown emphasis
            self.run.start_poisoned = self.dangling or _start_poisoned(self.toks, i)
            self.run.after_word = prev is not None and prev.kind == "word"
            self.dangling = False
        cur.append(tok)
        return i + 1

    def _joined(self, i: int) -> int:
        """A word, or a number after an operand: a mixed number, a word operator, units, or a boundary."""
        tok, cur = self.toks[i], self.run.tokens
        end = _mixed_number(self.toks, i, cur) if _ends_operand(cur) else None
        if end is not None:
            cur[-1:] = _mixed_tokens(cur[-1], *self.toks[end - 3:end])
            return end
        if tok.kind == "num":
            self.close(i)
            return self._arith(i)
        found = _word_op(self.toks, i, cur)
        if found is not None:
            cur.append(found[0])
            return found[1]
        skip = _unit_skip(self.toks, i, cur)
        if skip is not None:
            return skip
        self.dangling = self.dangling or (bool(cur) and cur[-1].kind == "op")
        self.close(i)
        return i + 1


def find_runs(toks: list[Token], budget: Budget) -> list[Run]:
    """Group the tokens into runs that contain at least one ``=``."""
    return _Scanner(toks, budget).scan()


def _split_eq(tokens: list[Token]) -> list[list[Token]]:
    sides: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.kind == "eq":
            sides.append([])
        else:
            sides[-1].append(tok)
    return sides


def _unmatched(side: list[Token]) -> tuple[int | None, int | None]:
    """Index of the first unmatched closer and of the last unmatched opener in ``side``."""
    stack: list[int] = []
    first_closer = None
    for k, tok in enumerate(side):
        if tok.kind == "lp":
            stack.append(k)
        elif tok.kind == "rp":
            if stack:
                stack.pop()
            elif first_closer is None:
                first_closer = k
    return first_closer, (stack[-1] if stack else None)


def link_sides(left: list[Token], right: list[Token], left_poisoned: bool,
               right_poisoned: bool) -> tuple[list[Token], list[Token]] | None:
    """The two sides of the claim ``left = right``, trimmed at brackets that enclose it, or None.

    ``Step 2 (3 + 4 = 7)`` gives ``3 + 4`` and ``7``; a bracket that closes on the
    left or opens on the right, or one opened on the left and never closed, means
    the ``=`` sits inside a larger expression, so there is no claim.
    """
    left_close, left_open = _unmatched(left)
    right_close, right_open = _unmatched(right)
    if left_close is not None or right_open is not None or (left_open is not None and right_close is None):
        return None
    lhs = left[left_open + 1:] if left_open is not None else ([] if left_poisoned else left)
    rhs = right[:right_close] if right_close is not None else ([] if right_poisoned else right)
    return (lhs, rhs) if lhs and rhs else None


def _value(side: list[Token], limits: Limits, budget: Budget):
    return Parser(side, limits, budget).parse()


def _literal_matches(value, side: list[Token], other: list[Token], approx: bool,
                     limits: Limits) -> str | None:
    """How the one-number ``side`` states ``value``, if it does (percentage points too: ``30 - 5 = 25%``)."""
    literal = as_literal(side, limits)
    if literal is None:
        return None
    how = "exact" if value == literal.value else rounding_match(value, literal, approx=approx)
    if how or not literal.percent or any(t.kind == "pct" for t in other):
        return how
    points = Literal(literal.value * 100, literal.decimals, False)
    if value == points.value:
        return "exact, in percentage points"
    how = rounding_match(value, points, approx=approx)
    return how and how + ", in percentage points"


def _times_hundred_percent(side: list[Token]) -> bool:
    """Whether ``side`` multiplies by ``100%``, the GSM8K way of writing "as a percentage"."""
    return any(a.kind == "num" and a.text == "100" and b.kind == "pct" for a, b in itertools.pairwise(side))


def _compare(lv, rv, lhs: list[Token], rhs: list[Token], approx: bool, limits: Limits) -> tuple[bool, str]:
    if lv == rv:
        return True, "exact"
    how = _literal_matches(lv, rhs, lhs, approx, limits) or _literal_matches(rv, lhs, rhs, approx, limits)
    if how:
        return True, how
    if _times_hundred_percent(lhs) and (how := _literal_matches(lv * 100, rhs, [], approx, limits)):
        return True, how + ", as a percentage (left side × 100%)"
    if len(rhs) > 2 and rhs[0].kind == "num" and rhs[1].kind == "op":
        first = as_literal(rhs[:1], limits)
        if first is not None and (lv == first.value or rounding_match(lv, first, approx=approx)):
            return True, "running computation: the left side equals the first term on the right"
    return False, f"left side is {show(lv)}, right side is {show(rv)}"


def check_link(src: str, lhs: list[Token], rhs: list[Token], approx: bool, limits: Limits,
               budget: Budget, *, literals: bool = False) -> Claim | None:
    """Check ``lhs = rhs``; None when it is no arithmetic claim (malformed, or literal = literal
    unless ``literals``)."""
    text, lhs_text = src[lhs[0].start:rhs[-1].end], src[lhs[0].start:lhs[-1].end]
    rhs_text = src[rhs[0].start:rhs[-1].end]
    try:
        if not literals and as_literal(lhs, limits) is not None and as_literal(rhs, limits) is not None:
            return None
        lv = _value(lhs, limits, budget)
        rv = _value(rhs, limits, budget)
    except Malformed:
        return None
    except Unverifiable as exc:
        return Claim(text, lhs_text, rhs_text, None, None, str(exc))
    except DivisionByZero as exc:
        return Claim(text, lhs_text, rhs_text, None, False, str(exc))
    ok, why = _compare(lv, rv, lhs, rhs, approx, limits)
    return Claim(text, lhs_text, rhs_text, exact(lv), ok, why)


def _readings(lhs: list[Token], rhs: list[Token]) -> list[tuple[list[Token], list[Token], str]]:
    """Other sensible readings of an ambiguous claim, tried when the plain one fails.

    Scale words may restate the unit rather than scale ("32 / 2 = $16 million"),
    and a trailing "of" may just name the whole ("3/3 - 2/3 = 1/3 of $150").
    """
    readings = []
    if any(t.kind == "scale" for t in lhs + rhs):
        plain = ([t for t in lhs if t.kind != "scale"], [t for t in rhs if t.kind != "scale"])
        readings.append((*plain, " (reading the scale words as units)"))
    cut = next((k for k, t in enumerate(rhs) if t.kind == "op" and t.text.lower() == "of"), None)
    if cut:
        readings.append((lhs, rhs[:cut], " (reading the right side up to \"of\")"))
    return readings


def _claim(src: str, lhs: list[Token], rhs: list[Token], approx: bool, limits: Limits, budget: Budget,
           annotation: bool) -> Claim | None:
    claim = check_link(src, lhs, rhs, approx, limits, budget, literals=annotation)
    if claim is None or claim.ok is not False:
        return claim
    for alt_lhs, alt_rhs, note in _readings(lhs, rhs):
        alt = check_link(src, alt_lhs, alt_rhs, approx, limits, budget, literals=annotation)
        if alt is not None and alt.ok:
            return Claim(claim.text, claim.lhs, claim.rhs, alt.value, True, alt.reason + note)
    return claim


def claims_in(src: str, limits: Limits, budget: Budget, *, annotation: bool = False) -> list[Claim]:
    """Every claim in the plain text ``src``, in order.

    ``annotation``: ``src`` is the inside of a calculator annotation, so there is
    no prose around it: a leading sign is fine and ``12=12`` is a claim too.
    """
    claims: list[Claim] = []
    if not _HAS_EQUALS.search(src):
        return claims
    for run in find_runs(tokenize(src), budget):
        sides = _split_eq(run.tokens)
        eqs = [t for t in run.tokens if t.kind == "eq"]
        for k in range(len(sides) - 1):
            left_poisoned = k == 0 and run.start_poisoned and not annotation
            right_poisoned = k + 2 == len(sides) and run.end_poisoned and not annotation
            pair = link_sides(sides[k], sides[k + 1], left_poisoned, right_poisoned)
            if pair is None or (k == 0 and run.after_word and as_literal(pair[0], limits) is not None):
                continue  # "Remaining 10 = 62,300/10": a label, not a quantity
            approx = eqs[k].text in ("≈", "\\approx")
            claim = _claim(src, *pair, approx, limits, budget, annotation)
            if claim is not None and annotation:
                claim = Claim(claim.text, claim.lhs, claim.rhs, claim.value, claim.ok,
                              "calculator annotation: " + claim.reason)
            if claim is not None:
                claims.append(claim)
    return claims


def step_claims(text: str, limits: Limits, budget: Budget) -> list[Claim]:
    """Claims of the calculator annotations ``<<a=b>>`` and then of the visible text.

    A visible claim that repeats an annotation's (same sides, ignoring spaces) is dropped.
    """
    claims = []
    for m in _ANNOTATION_RE.finditer(text):
        claims.extend(claims_in(m.group(1), limits, budget, annotation=True))
    seen = {("".join(c.lhs.split()), "".join(c.rhs.split())) for c in claims}
    for claim in claims_in(_ANNOTATION_RE.sub("", text), limits, budget):
        if ("".join(claim.lhs.split()), "".join(claim.rhs.split())) not in seen:
            claims.append(claim)
    return claims
