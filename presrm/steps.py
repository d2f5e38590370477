"""Split a solution into reasoning steps, and convert GSM8K gold solutions into steps.

The policy is prompted to write ``Step 1: ...`` lines, but small models often
ignore the format, so :func:`segment` tries, in order:

1. explicit ``Step n`` markers (``Step 1:``, ``Step 1.``, ``**Step 1:**``,
   ``## Step 1``, ``- Step 1:``; at a line start, or mid-line as ``Step n:``
   with a capital S and a colon);
2. numbered lines (``1.``, ``1)``, ``(1)``);
3. discourse markers (``First``, ``Next``, ``Then``, ``Finally``, ...) at line
   starts, or capitalised right after a sentence ends; they add boundaries to
   the line breaks rather than replace them;
4. non-empty lines;
5. sentences, when the whole text is one line.

A marker family is used only when it occurs at least twice; under ``Step n``
and numbered markers, the lines below a marker belong to its step.
:func:`marker_family` says which rule applied. Lines that carry a final
answer (``The answer is ...``, ``#### 72``, ``Final answer: ...``,
``\\boxed{...}``) become steps of their own; steps longer than ``max_chars``
are split at sentence or line boundaries (else at whitespace, else hard);
fragments too short to judge are merged into a neighbour.

``Step.text`` is always exactly ``text[step.start:step.end]``: the step's
source text with leading and trailing whitespace trimmed and its marker kept,
so the spans cover every non-whitespace character of the input exactly once.
Use :func:`step_body` to drop the marker, :func:`step_parts` to read both.

Every pattern runs in linear time (no nested quantifiers, no unbounded
prefix rescanned from every position), so there is no input-length bound; a
hostile 1 MB input costs seconds at worst (figures in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from presrm._numbers import NUMBER_RE
from presrm.schema import Step

__all__ = [
    "SegmentOptions",
    "final_answer_index",
    "format_steps",
    "gold_to_steps",
    "is_final_answer",
    "marker_family",
    "segment",
    "step_body",
    "step_parts",
]

_STEP_MARKER = re.compile(
    # At a line start, after an optional list bullet ("- Step 1:") or markdown ("### Step 1", "**Step 1:**").
    r"^[ \t]*(?:[-+*\u2022][ \t]+)?(?:#{1,6}[ \t]*)?(?:(?:\*\*|__)[ \t]*)?step[ \t]*\d{1,4}(?![.,]?\d)"
    # Mid-line markers need a capital S and the colon, so "as shown in step 2: ..." does not start a step.
    r"|(?<=[ \t])(?:\*\*|__)?(?-i:S(?:tep|TEP))[ \t]*\d{1,4}(?:\*\*|__)?[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
# "3.5 kg" at a line start is not a list item: the number must be followed by blank space.
_NUMBERED = re.compile(r"^[ \t]*(?:\*\*)?\(?\d{1,3}[.)](?=[ \t]|\*\*)", re.MULTILINE)
_DISCOURSE_WORDS = r"(?:First(?:ly)?|Second(?:ly)?|Third(?:ly)?|Next|Then|Finally|Lastly|After that|Afterwards)\b"
# At a line start in any case; mid-line only capitalised and right after a sentence ends.
_DISCOURSE = re.compile(
    rf"^[ \t]*(?:\*\*)?(?i:{_DISCOURSE_WORDS})|(?<=[.!?])[ \t]+(?:\*\*)?{_DISCOURSE_WORDS}",
    re.MULTILINE,
)
_LIST_NUMBER = re.compile(r"\d[.)]")
_DISCOURSE_HINTS = ("first", "second", "third", "next", "then", "finally", "lastly", "after")
# A line break followed by a line that is not blank; the lookahead stays within that one line.
_LINE_BREAK = re.compile(r"\n(?=[^\S\n]*\S)")
_NON_SPACE = re.compile(r"\S")
_LAST_SPACE = re.compile(r".*\s", re.DOTALL)

# Each optional group starts with a fixed symbol and owns the blanks after it: two ``\s*`` in a
# row would let the engine split a long run of spaces every possible way (quadratic backtracking).
_BODY_MARKER = re.compile(
    r"\s*(?:[-+*\u2022]\s+)?(?:#{1,6}\s*)?(?:(?:\*\*|__)\s*)?(?:step\s*\d{1,4}(?![.,]?\d)|\(?\d{1,3}[.)](?=\s|$))"
    # "Step 1: -5 degrees" keeps its minus sign: an ASCII dash is a separator only before a space.
    r"\s*(?:(?:\*\*|__)\s*)?(?:(?:[:.)\u2013\u2014]|-(?=\s))\s*)?(?:(?:\*\*|__)\s*)?",
    re.IGNORECASE,
)

# "#### 72" (GSM8K) but not a markdown heading such as "#### Step 1"; "Final answer: 7" but not
# "to find the final answer, ...". The markup before a line-start "Answer:" is bounded: ``^[\W_]*``
# would rescan a run of newlines from every line start in it (quadratic).
_FINAL = re.compile(
    r"####[ \t]*(?=[-+$\\(.\d])|\\boxed\{|\bthe (?:final |correct )?answer is\b"
    r"|\bfinal answer\b[* \t]*(?:is\b|[:=]|$)|^[ \t>#*_-]{0,8}answer[ \t*_]*:",
    re.IGNORECASE | re.MULTILINE,
)
# "... = 18. The answer is 18." on one line: the answer clause still gets its own step.
_FINAL_CLAUSE = re.compile(
    r"(?<=[.!?])[ \t]+((?:(?:so|therefore|thus|hence),?[ \t]+)?the (?:final |correct )?answer is\b|####)",
    re.IGNORECASE,
)
_ANSWER_HINT = re.compile(r"answer|####|\\boxed\{", re.IGNORECASE)
# A final-answer line that states no answer ("**Final Answer**", "The answer is:") takes the next line.
_HEADING_ONLY = re.compile(r"[\W_]*")

# The lookbehind starts a match only at the first mark of a run: "....." is scanned once, not once per dot.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]+[\"')\]]*\s+")
_LAST_WORD = re.compile(r"[^\W\d_]+(?:\.[^\W\d_]+)*$")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "approx", "cf", "fig"}
    | {"no", "inc", "ltd", "co", "ca", "eq"}
)

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_GOLD_FINAL = re.compile(r"####\s*(.*)")
_BLANKS = re.compile(r"\s+")

# One stray "Step 1:" or "1." does not make a format; two markers do.
_MIN_MARKERS = 2

Span = tuple[int, int]


@dataclass(frozen=True)
class SegmentOptions:
    """Size bounds for :func:`segment`.

    ``min_chars``: a step whose body (marker dropped) is shorter than this and
    holds no digit is merged into a neighbour; steps with a digit, such as
    ``x=26``, state something checkable and are kept however short.
    ``max_chars``: hard upper bound on ``len(step.text)``; longer steps are split.

    >>> SegmentOptions(max_chars=200).min_chars
    8
    """

    min_chars: int = 8
    max_chars: int = 400

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars < 1:
            raise ValueError(f"need min_chars >= 0 and max_chars >= 1, got {self}")


def segment(text: str, options: SegmentOptions | None = None) -> list[Step]:
    """Split ``text`` into ordered, non-overlapping steps.

    >>> [s.text for s in segment("Step 1: 16 - 3 = 13\\nStep 2: 13 * 2 = 26\\n#### 26")]
    ['Step 1: 16 - 3 = 13', 'Step 2: 13 * 2 = 26', '#### 26']
    >>> [s.text for s in segment("She has 3.5 kg, i.e. a lot. She eats 1.5 kg. The answer is 2.")]
    ['She has 3.5 kg, i.e. a lot.', 'She eats 1.5 kg.', 'The answer is 2.']
    >>> segment("Sure!\\n1. 2 + 2 = 4\\n2. 4 * 3 = 12")[0]
    Step(index=0, text='Sure!\\n1. 2 + 2 = 4', start=0, end=18)
    >>> segment("  \\n ")
    []
    """
    opts = options or SegmentOptions()
    spans = _family_spans(text)[1]
    if _ANSWER_HINT.search(text):
        spans = [piece for span in spans for piece in _split_final(text, span)]
    spans = [piece for span in spans for piece in _split_long(text, span, opts.max_chars)]
    spans = _merge_short(text, spans, opts)
    return [Step(index=i, text=text[s:e], start=s, end=e) for i, (s, e) in enumerate(spans)]


def step_parts(step_text: str) -> tuple[str, str]:
    """The step's marker as written and its body, as :func:`segment` reads them.

    The marker is everything before the body: leading blanks, a ``Step n`` marker in any of the
    forms the segmenter accepts (``Step 2:``, ``Step 2.``, ``**Step 2:**``, ``## Step 2``,
    ``- Step 2:``) or a list number (``2.``, ``2)``, ``(2)``), and the blanks after it; it is empty
    for a step that has none (``The answer is 26.``, ``First, ...``). The body is the rest without
    its trailing blanks, so ``marker + body`` is the step's text up to its trailing blanks.

    >>> step_parts("**Step 2:** 13 * 2 = 26")
    ('**Step 2:** ', '13 * 2 = 26')
    >>> step_parts("Step 2. Time: 3 hours")
    ('Step 2. ', 'Time: 3 hours')
    >>> step_parts("The answer is 26.")
    ('', 'The answer is 26.')
    """
    marker = _BODY_MARKER.match(step_text)
    rest = step_text[marker.end() if marker else 0 :]
    body = rest.strip()
    return step_text[: len(step_text) - len(rest.lstrip())], body


def step_body(step_text: str) -> str:
    """Return the step without its ``Step n:`` (or ``1.``) marker and surrounding whitespace (:func:`step_parts`).

    >>> step_body("**Step 2:** 13 * 2 = 26")
    '13 * 2 = 26'
    >>> step_body("Step 3: -5 + 8 = 3")
    '-5 + 8 = 3'
    >>> step_body("First, 3 + 4 = 7")
    'First, 3 + 4 = 7'
    """
    return step_parts(step_text)[1]


def format_steps(steps: Sequence[str]) -> str:
    """Render step bodies as ``Step 1: ...`` lines, the format the policy is asked to write.

    Newlines inside a body become spaces so that each step stays on one line.

    >>> print(format_steps(["16 - 3 = 13", "The answer is 13."]))
    Step 1: 16 - 3 = 13
    Step 2: The answer is 13.
    """
    return "\n".join(f"Step {i}: {_BLANKS.sub(_one_line, body.strip())}" for i, body in enumerate(steps, 1))


def _one_line(blanks: re.Match[str]) -> str:
    """A run of whitespace that holds a line break becomes one space; other runs are kept."""
    return " " if "\n" in blanks.group() else blanks.group()


def gold_to_steps(answer: str) -> list[str]:
    """Turn a GSM8K gold solution into step bodies.

    One step per non-empty line, ``<<...>>`` calculator annotations removed,
    and the ``#### N`` line rewritten as ``The answer is N.``. A line broken
    off mid-sentence (a fragment: shorter than ``SegmentOptions.min_chars``, no
    digit, such as ``hour.``) is joined to the line before it, as
    :func:`segment` would do.

    >>> gold_to_steps("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n#### 24")
    ['Natalia sold 48/2 = 24 clips in May.', 'The answer is 24.']
    """
    min_chars = SegmentOptions().min_chars
    steps: list[str] = []
    for raw in answer.split("\n"):
        line = _ANNOTATION.sub("", raw).strip()
        final = _GOLD_FINAL.match(line)
        if final:
            line = f"The answer is {final.group(1).strip()}."
        if not line:
            continue
        if steps and not final and _is_fragment(line, min_chars):
            steps[-1] = f"{steps[-1]} {line}"
        else:
            steps.append(line)
    return steps


def is_final_answer(step_text: str) -> bool:
    """Whether the step states the final answer.

    >>> [is_final_answer(t) for t in ("Step 4: The answer is 18.", "So x = \\\\boxed{18}", "x = 18")]
    [True, True, False]
    """
    return _FINAL.search(step_text) is not None


def final_answer_span(step_text: str) -> tuple[int, int] | None:
    """Character span of the number a final-answer step states as its answer, or None.

    >>> final_answer_span("Step 4: The answer is 18.")
    (22, 24)
    >>> final_answer_span("x = 18") is None
    True
    """
    final = _FINAL.search(step_text)
    number = NUMBER_RE.search(step_text, final.end()) if final else None
    return number.span() if number else None


def final_answer_index(steps: Sequence[Step]) -> int | None:
    """Index of the first final-answer step, or None when there is none.

    The first one is returned because anything after it is usually
    post-answer chatter (restatements, repeated lines) that training should ignore.

    >>> final_answer_index(segment("Step 1: 2 + 2 = 4\\nStep 2: The answer is 4.\\nThe answer is 4."))
    1
    """
    return next((step.index for step in steps if is_final_answer(step.text)), None)


def _trim(text: str, start: int, end: int) -> Span | None:
    """Shrink ``[start, end)`` to exclude outer whitespace; None when nothing is left."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    start += len(piece) - len(piece.lstrip())
    return start, start + len(stripped)


def _cut(text: str, cuts: Sequence[int], end: int) -> list[Span]:
    """Split ``[min(cuts), end)`` at every cut, dropping pieces that are only whitespace."""
    bounds = [*sorted(set(cuts)), end]
    return [span for a, b in pairwise(bounds) if a < b and (span := _trim(text, a, b))]


def marker_family(text: str) -> str:
    """How :func:`segment` splits ``text`` before any merge or split.

    One of ``"step"`` (``Step n`` markers), ``"numbered"`` (``1.`` lines),
    ``"discourse"`` (``First,`` / ``Next,`` / ``Finally,`` lines), ``"lines"``,
    ``"sentences"`` (the text is one line), or ``"empty"`` (only whitespace).

    >>> [marker_family(t) for t in ("Step 1: a\\nStep 2: b", "1. a\\n2. b", "a\\nb", "A. B.", " ")]
    ['step', 'numbered', 'lines', 'sentences', 'empty']
    """
    return _family_spans(text)[0]


def _family_spans(text: str) -> tuple[str, list[Span]]:
    """Split by the first marker family that occurs twice, else by lines, else by sentences.

    ``Step n`` and numbered markers replace line breaks as boundaries: the lines
    under one marker are one step. Discourse markers add boundaries to the line
    breaks instead, since prose puts "Then" at the start of some steps only.
    """
    # Cheap tests first: the anchored family patterns cost far more per character on long texts.
    folded = text.casefold()
    for name, family, possible in (("step", _STEP_MARKER, "step" in folded),
                                   ("numbered", _NUMBERED, _LIST_NUMBER.search(text) is not None)):
        starts = [m.start() for m in family.finditer(text)] if possible else []
        if len(starts) >= _MIN_MARKERS:
            return name, _cut(text, [0, *starts], len(text))
    line_starts = [m.end() for m in _LINE_BREAK.finditer(text)]
    possible = any(word in folded for word in _DISCOURSE_HINTS)
    discourse = [m.start() for m in _DISCOURSE.finditer(text)] if possible else []
    if len(discourse) >= _MIN_MARKERS:
        return "discourse", _cut(text, [0, *line_starts, *discourse], len(text))
    lines = _cut(text, [0, *line_starts], len(text))
    if len(lines) != 1:
        return ("lines" if lines else "empty"), lines
    start, end = lines[0]
    return "sentences", _cut(text, [start, *_sentence_starts(text, start, end)], end)


def _sentence_starts(text: str, start: int, end: int) -> list[int]:
    """Positions in ``[start, end)`` where a new sentence begins.

    A boundary is ``.``, ``!`` or ``?`` followed by whitespace and a character
    that is not lowercase, unless the word before the period is a known
    abbreviation (``Mr.``, ``e.g.``). Decimals (``3.5``, ``$1.50``) have no
    whitespace after the period, so they never match.
    """
    starts = []
    for m in _SENTENCE_END.finditer(text, start, end):
        if m.end() >= end or text[m.end()].islower():
            continue
        if m.start() > start and text[m.start() - 1].isalpha():
            word = _LAST_WORD.search(text[max(start, m.start() - 16) : m.start()])
            if word and word.group().lower() in _ABBREVIATIONS:
                continue
        starts.append(m.end())
    return starts


def _split_final(text: str, span: Span) -> list[Span]:
    """Give each final-answer line, and each trailing answer clause, a span of its own.

    Only lines with a match are visited, so a span of a million short lines costs one regex scan.
    """
    start, end = span
    cuts = [start]
    pos = start
    while (final := _FINAL.search(text, pos, end)) is not None:
        line_start = text.rfind("\n", start, final.start()) + 1 or start
        line_end = _line_end(text, final.end(), end)
        cuts.append(line_start)
        # "3. The answer is 26." stays whole: a clause is cut off only after a sentence of its own.
        marker = _BODY_MARKER.match(text, line_start, line_end)
        body_start = marker.end() if marker else line_start
        cuts += [m.start(1) for m in _FINAL_CLAUSE.finditer(text, body_start, line_end)]
        if _HEADING_ONLY.fullmatch(text, final.end(), line_end):
            line_end = _next_line_end(text, line_end, end)
        cuts.append(line_end)
        pos = line_end
    return _cut(text, cuts, end)


def _line_end(text: str, pos: int, end: int) -> int:
    """The position just after the line break that ends the line holding ``pos``, or ``end``."""
    newline = text.find("\n", pos, end)
    return end if newline < 0 else newline + 1


def _next_line_end(text: str, pos: int, end: int) -> int:
    """The end of the first line from ``pos`` that is not blank, or ``end``."""
    while pos < end:
        line_end = _line_end(text, pos, end)
        if not text[pos:line_end].isspace():
            return line_end
        pos = line_end
    return end


def _split_long(text: str, span: Span, max_chars: int) -> list[Span]:
    """Split a span longer than ``max_chars`` into greedy pieces of at most ``max_chars``.

    Pieces end at the last sentence or line boundary that fits; failing that at
    the last whitespace; failing that (one huge token) exactly at the limit.
    """
    start, end = span
    if end - start <= max_chars:
        return [span]
    line_starts = [m.end() for m in _LINE_BREAK.finditer(text, start, end)]
    bounds = sorted({*_sentence_starts(text, start, end), *line_starts})
    pieces = []
    while end - start > max_chars:
        limit = start + max_chars
        i = bisect_right(bounds, limit) - 1
        cut = bounds[i] if i >= 0 and bounds[i] > start else _last_space(text, start, limit)
        piece = _trim(text, start, cut)
        if piece:
            pieces.append(piece)
        # ``end`` is trimmed and ``cut < end``, so a non-space character is found before ``end``.
        start = _NON_SPACE.search(text, cut, end).start()
    pieces.append((start, end))
    return pieces


def _last_space(text: str, start: int, limit: int) -> int:
    """The last whitespace position in ``(start, limit]``, else ``limit`` itself (a hard cut)."""
    last = _LAST_SPACE.match(text, start + 1, limit + 1)
    return last.end() - 1 if last else limit


def _merge_short(text: str, spans: list[Span], opts: SegmentOptions) -> list[Span]:
    """Merge fragments too short to judge into a neighbour, never into a final-answer step.

    Each span is judged on its own text. A fragment joins the previous step when
    that is not a final answer and the union fits ``max_chars``; otherwise it
    waits to be prepended to the next step (a leading "Sure!" joins Step 1),
    together with any fragments that follow it; otherwise it is kept as is.
    """
    out: list[tuple[int, int, bool]] = []
    pending: Span | None = None  # fragments waiting to be prepended to the next step
    for start, end in spans:
        piece = text[start:end]
        final = is_final_answer(piece)
        if not final and _is_fragment(piece, opts.min_chars):
            if pending is not None and end - pending[0] <= opts.max_chars:
                pending = (pending[0], end)
            elif pending is None and out and not out[-1][2] and end - out[-1][0] <= opts.max_chars:
                out[-1] = (out[-1][0], end, False)
            else:
                if pending is not None:
                    out.append((*pending, False))
                pending = (start, end)
            continue
        if pending is not None:
            if not final and end - pending[0] <= opts.max_chars:
                start = pending[0]
            else:
                out.append((*pending, False))
            pending = None
        out.append((start, end, final))
    if pending is not None:
        out.append((*pending, False))
    return [(start, end) for start, end, _ in out]


def _is_fragment(step_text: str, min_chars: int) -> bool:
    body = step_body(step_text)
    return len(body) < min_chars and not any(ch.isdigit() for ch in body)
