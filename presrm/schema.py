"""Records shared by every pipeline stage.

Everything written to disk is one of these dataclasses turned into a plain
dict (``to_dict``), one JSON object per line, so pandas and ``datasets`` read
the files directly. ``SCHEMA_VERSION`` is written next to each record set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

Verdict = Literal["correct", "incorrect", "unverifiable"]


@dataclass(frozen=True)
class Problem:
    """One math word problem with its gold answer."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    """One reasoning step: its text and its span ``[start, end)`` in the solution."""

    index: int
    text: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """One arithmetic claim found in a step, e.g. ``16 - 3 - 4 = 9``.

    ``value`` is the exact value of the left side as a string (a sympy
    rational printed), or None when it could not be computed.
    """

    text: str
    lhs: str
    rhs: str
    value: str | None
    ok: bool | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepCheck:
    """The verifier's verdict on one step.

    ``correct``: every claim holds; ``incorrect``: at least one claim is
    wrong; ``unverifiable``: no claim was found or none could be computed.
    """

    verdict: Verdict
    claims: tuple[Claim, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "claims": [c.to_dict() for c in self.claims], "reason": self.reason}


@dataclass
class StepPair:
    """A step-level preference pair in TRL's preference shape.

    ``prompt`` is the question plus the previous chosen steps; ``chosen`` and
    ``rejected`` are one candidate next step each. ``meta`` carries the
    problem id, step index, scores, wins, verifier verdicts and iteration.
    """

    prompt: str
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalRecord:
    """One evaluated problem: completion, steps, extracted answers and correctness."""

    id: str
    question: str
    gold: str
    completion: str
    steps: list[dict[str, Any]]
    pred_strict: str | None
    pred_flexible: str | None
    correct_strict: bool
    correct_flexible: bool
    step_scores: list[float] = field(default_factory=list)
    step_checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
