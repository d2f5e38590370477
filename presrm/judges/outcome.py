"""Outcome judge: the additive 5-point rubric of Self-Rewarding LMs (Yuan et al., 2024) on whole solutions.

The model adds one point per criterion met (relevant; addresses a substantial
part; answers the basic elements usefully; clear, organized and nearly
right; fully correct and expert), justifies briefly, and ends with
``Score: <points>``. The reward is points / 5; an unparseable reply gives
None, never a silent 0. Decoding is greedy. It is the outcome-level baseline
that process judging must beat.

>>> parse_score("Relevant and correct. Score: 4")
4.0
>>> parse_score("I would give it 4 points.") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from presrm.generate import render_chat
from presrm.judges.common import ScoreJudgeBase, SolutionToJudge, judgments, load_template
from presrm.verify import NUMBER, parse_number

MAX_POINTS = 5
_SCORE = re.compile(r"(?i:\bscore)\s*(?:\((?i:total)\)\s*)?(?:(?i:is|of)\s+)?[:=]?\s*[*_\"'(\[]*\s*"
                    rf"({NUMBER})(?:\s*(?:/|(?i:out\s+of))\s*([0-9]+))?")


def parse_score(text: str) -> float | None:
    """Points (0..5) from the last ``Score: N`` (also ``Score: N/5``, "score of N out of 5"), else None.

    Note: a score outside 0..5, or out of another total ("8/10"), is None.
    """
    found = _SCORE.findall(text)
    if not found:
        return None
    value, total = found[-1]
    number = parse_number(value)
    if number is None or (total and int(total) != MAX_POINTS) or number > MAX_POINTS:
        return None
    return float(number)


@dataclass
class OutcomeVerdict:
    """One solution's rubric result: ``score`` = points / 5 (None when unparseable) and the raw reply."""

    score: float | None
    points: float | None
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutcomeJudge(ScoreJudgeBase):
    """Scores whole solutions with the additive 5-point rubric; ``score`` gives points / 5.

    In a tournament each candidate next step is scored as the end of the solution so far.

    >>> judge = OutcomeJudge(engine)  # doctest: +SKIP
    >>> judge.score([SolutionToJudge("1+1?", "Step 1: 1 + 1 = 2. The answer is 2.")])  # doctest: +SKIP
    [0.8]
    """

    mode = "outcome"
    unit = "solution"
    item_type = SolutionToJudge
    prefill = ""
    template_sample = {"question": "<QUESTION>", "solution": "<SOLUTION>"}

    def __init__(self, engine, *, template: str | None = None, batch_size: int = 8, max_new_tokens: int = 192,
                 samples: int = 1, temperature: float = 0.7, seed: int = 0):
        self.engine, self.tok, self.batch_size, self.max_new_tokens = engine, engine.tok, batch_size, max_new_tokens
        self.samples, self.temperature, self.seed = samples, temperature, seed
        self.template = load_template(template, self.mode, **self.template_sample)
        self.last_verdicts: list[OutcomeVerdict] = []

    def prompt(self, item: SolutionToJudge) -> str:
        return render_chat(self.tok, self.template.render(question=item.question, solution=item.solution),
                           self.prefill)

    def candidate_item(self, question: str, previous: tuple[str, ...], candidate: str) -> SolutionToJudge:
        return SolutionToJudge(question, "\n".join((*previous, candidate)))

    def verdicts(self, items: Sequence[SolutionToJudge], *, desc: str | None = None) -> list[OutcomeVerdict]:
        """One verdict (score, points, raw reply) per solution, decoded in one engine call; with ``samples``
        k > 1, the mean points of the parseable ones among k sampled judgments (None when none parses)."""
        replies = judgments(self.engine, [self.prompt(it) for it in items], samples=self.samples,
                            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                            batch_size=self.batch_size, seed=self.seed, desc=desc)
        out = []
        for sampled in replies:
            read = [p for p in map(parse_score, sampled) if p is not None]
            points = sum(read) / len(read) if read else None
            out.append(OutcomeVerdict(score=None if points is None else points / MAX_POINTS, points=points,
                                      raw="\n\n".join(sampled)))
        self.last_verdicts = out
        return out

    def score(self, items: Sequence[SolutionToJudge], *, desc: str | None = None) -> list[float | None]:
        """points / 5 per solution, None when the reply has no readable score (raw replies: ``last_verdicts``)."""
        return [v.score for v in self.verdicts(items, desc=desc)]

    def score_solutions(self, questions: Sequence[str], solutions: Sequence[str], *,
                        desc: str | None = None) -> list[float | None]:
        """``score`` on ``(question, solution)`` couples given as two lists."""
        if len(questions) != len(solutions):
            raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions")
        return self.score([SolutionToJudge(q, s) for q, s in zip(questions, solutions, strict=True)], desc=desc)
