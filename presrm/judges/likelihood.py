"""Likelihood judge: a step is as good as the model's own belief in what it states.

No judge prompt and no verdict token: the step is put back exactly where and as the policy wrote it
(:func:`presrm.generate.response_prompt`: evaluation's prompt with the task's shots, the previous
steps as written, one a line, then the step's own marker as written, ``Step 2:``, ``**Step 2:**``,
``2.`` or none at all, :func:`presrm.steps.step_parts`) and the model's log-probabilities of the
step body's tokens are read, one forward pass per batch (a span log-probability request to the
engine, HF or vLLM).

The score, in (0, 1], is ``exp(claim + body_weight * body)``:

- ``claim``: the mean token log-probability of the step's *least* likely claim. The claims are the
  arithmetic results it states (numbers right after ``=``, :func:`presrm.perturb.result_spans`);
  a final-answer step with no ``=`` result claims its answer (``The answer is 18.``); a step with
  neither claims its whole text. A result the model would not have written itself scores low.
- ``body``: the mean token log-probability of the whole step, weighted by ``body_weight`` (0.05):
  candidates that state the same result after the same words still differ in the rest of the step,
  so a search's candidates rarely tie exactly (a tie of every candidate rolls the search back).

Why: on its own sampled steps the embedded 135M model's P(Yes) judge ranks verifiably wrong steps
*above* right ones (step AUROC 0.41 on the natural-error set), while the probability it gives the
numbers it wrote separates them (AUROC 0.85 on the same steps; docs/LOG.md). Its arithmetic errors
are mostly sampling slips that its own distribution, read at the result, does not back.

The text read for a step is a prefix of the text read for the step after it in the same solution, so
the engine reads all of a solution's steps from one pass over the whole solution (``one_pass``,
:meth:`presrm.engines.EngineBase.span_logprobs`).

>>> judge = LikelihoodJudge(engine)  # doctest: +SKIP
>>> judge.score([StepToJudge("What is 3 + 4?", (), "Step 1: 3 + 4 = 7")])  # doctest: +SKIP
[0.93]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from presrm.data import Task, load_shots, load_task
from presrm.errors import ConfigError
from presrm.generate import response_prompt
from presrm.judges.common import ScoreJudgeBase, StepToJudge
from presrm.perturb import result_spans
from presrm.steps import final_answer_span, step_parts

Span = tuple[int, int]


class LikelihoodJudge(ScoreJudgeBase):
    """Scores a step by the model's probability of its least likely claim (see the module docstring).

    ``task``: the task the steps answer, by name (``tasks_dir``) or as a :class:`presrm.data.Task`
    (evaluation's, with its ``--num-fewshot`` shots); its prompt, layout and shots are the context.
    """

    mode = "likelihood"
    unit = "step"
    prefill = ""

    def __init__(self, engine, *, task: str | Task = "gsm8k", tasks_dir: str | None = None, batch_size: int = 16,
                 body_weight: float = 0.05, one_pass: bool = True):
        if not 0.0 <= body_weight <= 1.0:
            raise ConfigError(f"body_weight must be in [0, 1], got {body_weight}")
        self.engine, self.tok, self.batch_size = engine, engine.tok, batch_size
        self.task = task if isinstance(task, Task) else load_task(task, tasks_dir)
        self.shots = load_shots(self.task)
        self.body_weight, self.one_pass = body_weight, one_pass

    def prompt(self, item: StepToJudge) -> str:
        """The policy's own text up to the step's body: prompt, previous steps, the step's marker as written."""
        text, (whole, *_) = self._text(item)
        return text[:whole[0]]

    def _text(self, item: StepToJudge) -> tuple[str, list[Span]]:
        """The policy's text ending in the step, and the character spans of its body then its claims."""
        marker, body = step_parts(item.step)
        text = response_prompt(self.tok, self.task, item.question, [*item.previous, marker + body], shots=self.shots)
        start = len(text) - len(body)
        claims = result_spans(body)
        if not claims:
            answer = final_answer_span(body)
            claims = [answer] if answer else []
        whole = (0, len(body))
        return text, [(start + a, start + b) for a, b in [whole, *(claims or [whole])]]

    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """``exp(claim + body_weight * body)`` per step (module docstring); 0 for a step with no text."""
        if not items:
            return []
        texts, spans = zip(*(self._text(it) for it in items), strict=True)
        lps = self.engine.span_logprobs(list(texts), list(spans), batch_size=self.batch_size, one_pass=self.one_pass,
                                        desc=desc)
        out: list[float] = []
        for body, *claims in lps:
            known = [x for x in claims if not math.isnan(x)]
            out.append(math.exp(min(known) + self.body_weight * body) if known and not math.isnan(body) else 0.0)
        return out
