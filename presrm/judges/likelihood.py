"""Likelihood judge: a step is as good as the model's own belief in the results it states.

No judge prompt and no verdict token: the step is put back where the policy wrote it (the policy
prompt, the previous steps, ``Step n:``) and the model's log-probability of each arithmetic result
(a number right after ``=``, :func:`presrm.perturb.result_spans`) is read, one forward pass per
batch. The score is the geometric-mean token probability of the *least* likely result, in (0, 1]:
a result the model would not have written itself scores low. A step that states no result gets
``no_claim_score`` (0.5 by default: no evidence either way).

Why: on its own sampled steps the embedded 135M model's P(Yes) judge ranks verifiably wrong steps
*above* right ones (step AUROC 0.41 on the natural-error set), while the probability it gives the
numbers it wrote separates them (AUROC 0.85 on the same steps; docs/LOG.md). Its arithmetic errors
are mostly sampling slips that its own distribution, read at the result, does not back.

Only the HF engine reads span log-probabilities today; with another engine this judge says so.

>>> judge = LikelihoodJudge(engine)  # doctest: +SKIP
>>> judge.score([StepToJudge("What is 3 + 4?", (), "Step 1: 3 + 4 = 7")])  # doctest: +SKIP
[0.93]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from presrm.errors import ConfigError
from presrm.generate import step_prompt
from presrm.judges.common import ScoreJudgeBase, StepToJudge
from presrm.perturb import result_spans


class LikelihoodJudge(ScoreJudgeBase):
    """Scores a step by the model's probability of its least likely stated result (see the module docstring)."""

    mode = "likelihood"
    unit = "step"
    prefill = ""

    def __init__(self, engine, *, task: str = "gsm8k", batch_size: int = 16, no_claim_score: float = 0.5):
        from presrm.data import load_task

        if not hasattr(engine, "span_logprobs"):
            raise ConfigError(f"judge mode 'likelihood' needs the hf engine (engine {engine.name!r} gives no "
                              "span log-probabilities); use engine: hf or another judge.mode")
        if not 0.0 <= no_claim_score <= 1.0:
            raise ConfigError(f"no_claim_score must be in [0, 1], got {no_claim_score}")
        self.engine, self.tok, self.batch_size = engine, engine.tok, batch_size
        self.task, self.no_claim_score = load_task(task), no_claim_score

    def prompt(self, item: StepToJudge) -> str:
        """The policy's own text up to the step's body: prompt, previous steps, ``Step n:``."""
        return step_prompt(self.tok, self.task, item.question, item.previous, len(item.previous) + 1)

    def _text(self, item: StepToJudge) -> tuple[str, list[tuple[int, int]]]:
        marker, sep, body = item.step.partition(":")
        body = body if sep and marker.strip().lower().startswith("step") else " " + item.step
        head = self.prompt(item)
        return head + body, [(len(head) + a, len(head) + b) for a, b in result_spans(body)]

    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """exp(mean log-prob) of the least likely result of each step; ``no_claim_score`` without one."""
        if not items:
            return []
        texts, spans = zip(*(self._text(it) for it in items), strict=True)
        lps = self.engine.span_logprobs(list(texts), list(spans), batch_size=self.batch_size, desc=desc)
        out = []
        for lp in lps:
            known = [x for x in lp if not math.isnan(x)]
            out.append(math.exp(min(known)) if known else self.no_claim_score)
        return out
