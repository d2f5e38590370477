"""Random "judge": a control, not a judge. Each step scores a uniform number in [0, 1) from a hash.

The ablation arm "no judge" (issue 18): step search ranks its candidates at random while everything
else, verifier grounding included, stays as it is. The score of a step is derived from the seed and the
item's text alone (SHA-256 of seed, question, previous steps and step), so a rerun gives the same
scores and pairs, and a step's score depends neither on the batch it is scored in nor on its position
there. It never calls the model: ``engine`` is accepted for the common interface and left unused.

>>> judge = RandomJudge(None, seed=0)
>>> a, b = judge.score([StepToJudge("1+1?", (), "Step 1: 1 + 1 = 2"), StepToJudge("1+1?", (), "Step 1: 1 + 1 = 3")])
>>> 0.0 <= a < 1.0 and 0.0 <= b < 1.0 and a != b
True
>>> judge.score([StepToJudge("1+1?", (), "Step 1: 1 + 1 = 2")]) == [a]
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from presrm.judges.common import ScoreJudgeBase, StepToJudge

_SEP = "\x1f"  # the ASCII unit separator: no step text holds it, so no two items share a key


class RandomJudge(ScoreJudgeBase):
    """Scores each step with a seeded hash of its text, uniform in [0, 1) (see the module docstring)."""

    mode = "random"
    unit = "step"
    prefill = ""

    def __init__(self, engine=None, *, seed: int = 0, batch_size: int = 16):
        # batch_size is taken like every judge's (make_judge_from_config, judge-eval, benchmarks pass it) and
        # recorded, but nothing is batched: a score is one hash.
        self.engine, self.seed, self.batch_size = engine, seed, batch_size

    def prompt(self, item: StepToJudge) -> str:
        """The text a step's score is drawn from: the seed, the question, every previous step and the step."""
        return _SEP.join((str(self.seed), item.question, *item.previous, _SEP, item.step))

    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """A number in [0, 1) per step: the first 53 bits of SHA-256(``prompt(item)``) over 2**53 (exact in a float)."""
        return [_uniform(self.prompt(it)) for it in items]


def _uniform(text: str) -> float:
    bits = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 11
    return bits / 2**53
