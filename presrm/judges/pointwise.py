"""Pointwise judge: is step k correct, given the question and steps 1..k-1? Score = P(Yes).

Its verdict words (Yes, No) are its registry entry's ``verdicts``, which EFT trains as completions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from presrm.generate import render_chat
from presrm.judges.common import ScoreJudgeBase, StepToJudge, chains, disjoint_ids, load_template
from presrm.judges.registry import spec


def _variants(word: str) -> tuple[str, ...]:
    """The spellings of a verdict word whose first token counts: as is and lower-case, each with a leading space."""
    return tuple(dict.fromkeys((word, " " + word, word.lower(), " " + word.lower())))


class PointwiseJudge(ScoreJudgeBase):
    """Scores steps with P(Yes) / (P(Yes) + P(No)) from the next-token distribution after a judge prompt.

    The steps of one solution share their start (question and earlier steps);
    with ``prefix_cache`` (the default) the HF engine encodes that start once
    per solution and each step runs only its own suffix (see
    ``presrm.engines.hf_forward``); vLLM caches shared prefixes by itself.

    >>> judge = PointwiseJudge(engine)  # doctest: +SKIP
    >>> judge.score([StepToJudge("1+1?", (), "Step 1: 1 + 1 = 2")])  # doctest: +SKIP
    [0.73]
    """

    mode = "pointwise"
    unit = "step"
    prefill = ""
    template_sample = {"question": "<QUESTION>", "previous": ["<PREVIOUS>"], "step": "<STEP>"}

    def __init__(self, engine, *, template: str | None = None, batch_size: int = 16, prefix_cache: bool = True):
        self.engine, self.tok, self.batch_size, self.prefix_cache = engine, engine.tok, batch_size, prefix_cache
        self.template = load_template(template, self.mode, **self.template_sample)
        yes, no = spec(self.mode).verdicts  # the words EFT trains it to answer (Yes, No)
        self.yes_ids, self.no_ids = disjoint_ids(self.tok, _variants(yes), _variants(no), self.mode)

    def prompt(self, item: StepToJudge) -> str:
        user = self.template.render(question=item.question, previous=list(item.previous), step=item.step)
        return render_chat(self.tok, user, self.prefill)

    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """P(Yes)/(P(Yes)+P(No)) for each step, in the order given."""
        if not items:
            return []
        lp = self.engine.choice_logprobs([self.prompt(it) for it in items], [self.yes_ids, self.no_ids],
                                         groups=chains([(it.question, it.previous) for it in items]),
                                         batch_size=self.batch_size, prefix_cache=self.prefix_cache, desc=desc,
                                         unit="step")
        return [float(x) for x in torch.sigmoid(lp[:, 0] - lp[:, 1])]
