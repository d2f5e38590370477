"""Pointwise judge: is step k correct, given the question and steps 1..k-1? Score = P(Yes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from presrm.generate import render_chat
from presrm.judges.common import StepToJudge, chains, disjoint_ids, load_template
from presrm.judges.forward import answer_logprobs

_YES = ("Yes", " Yes", "yes", " yes")
_NO = ("No", " No", "no", " no")


class PointwiseJudge:
    """Scores steps with P(Yes) / (P(Yes) + P(No)) from the next-token logits after a judge prompt.

    The steps of one solution share their start (question and earlier steps);
    with ``prefix_cache`` (the default) that start is encoded once per
    solution and each step runs only its own suffix (see
    ``presrm.judges.forward``).

    >>> judge = PointwiseJudge(model, tok)  # doctest: +SKIP
    >>> judge.score([StepToJudge("1+1?", (), "Step 1: 1 + 1 = 2")])  # doctest: +SKIP
    [0.73]
    """

    mode = "pointwise"

    def __init__(self, model, tok, *, template: str | None = None, batch_size: int = 16,
                 prefix_cache: bool = True):
        self.model, self.tok, self.batch_size, self.prefix_cache = model, tok, batch_size, prefix_cache
        self.template = load_template(template, "pointwise", question="<QUESTION>", previous=["<PREVIOUS>"],
                                      step="<STEP>")
        self.yes_ids, self.no_ids = disjoint_ids(tok, _YES, _NO, "pointwise")

    def prompt(self, item: StepToJudge) -> str:
        user = self.template.render(question=item.question, previous=list(item.previous), step=item.step)
        return render_chat(self.tok, user)

    @torch.inference_mode()
    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """P(Yes)/(P(Yes)+P(No)) for each step, in the order given."""
        lp = answer_logprobs(self.model, self.tok, [self.prompt(it) for it in items], [self.yes_ids, self.no_ids],
                             batch_size=self.batch_size, groups=chains([(it.question, it.previous) for it in items]),
                             prefix_cache=self.prefix_cache, desc=desc, unit="step")
        return [float(x) for x in torch.sigmoid(lp[:, 0] - lp[:, 1])]
