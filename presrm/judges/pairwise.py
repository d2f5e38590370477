"""Pairwise logit judge (PReSRM): is candidate next step A or B better? Read from P([[A]]) vs P([[B]]).

The prompt shows the question, the previous steps and the two candidates
between ``[The Start of Step A]`` / ``[The End of Step A]`` markers, asks for
``[[A]]`` or ``[[B]]``, and the assistant's reply is prefilled with ``[[`` so
that the next token is the verdict: ``p = P(A) / (P(A) + P(B))``, summing the
first tokens of "A" and " A" (and of "B" and " B"). With ``both_orders`` each
pair is also judged with B shown first, and ``p_a`` is the mean of the two
orders, which cancels a constant position bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from presrm.generate import render_chat
from presrm.judges.common import (
    PairJudgeBase,
    PairToJudge,
    PairVerdict,
    chains,
    combine_orders,
    disjoint_ids,
    load_template,
    order_verdict,
)

_A = ("A", " A")
_B = ("B", " B")
PAIR_SAMPLE = {"question": "<QUESTION>", "previous": ["<PREVIOUS>"], "a": "<STEP A>", "b": "<STEP B>"}


def orders_of(item: PairToJudge, both_orders: bool) -> list[tuple[str, PairToJudge]]:
    """``(order, the pair as shown)`` for each order judged: ``AB`` as it is, ``BA`` with A and B swapped."""
    pairs = [("AB", item)]
    if both_orders:
        pairs.append(("BA", PairToJudge(item.question, item.previous, item.b, item.a)))
    return pairs


class PairwiseJudge(PairJudgeBase):
    """Pairwise verdicts from next-token probabilities, both orders by default; ties on disagreement.

    >>> judge = PairwiseJudge(engine)  # doctest: +SKIP
    >>> judge.compare([PairToJudge("1+1?", (), "Step 1: 1 + 1 = 2", "Step 1: 1 + 1 = 3")])  # doctest: +SKIP
    [PairVerdict(winner='A', p_a=0.71, orders=[...], raw=None)]
    """

    mode = "pairwise"
    prefill = "[["
    template_sample = PAIR_SAMPLE

    def __init__(self, engine, *, template: str | None = None, batch_size: int = 16, both_orders: bool = True,
                 tie_margin: float = 0.1, prefix_cache: bool = True):
        self.engine, self.tok, self.batch_size = engine, engine.tok, batch_size
        self.both_orders, self.tie_margin, self.prefix_cache = both_orders, tie_margin, prefix_cache
        self.template = load_template(template, self.mode, **self.template_sample)
        self.a_ids, self.b_ids = disjoint_ids(self.tok, _A, _B, "pairwise")

    def prompt(self, item: PairToJudge) -> str:
        """The exact text the model sees (A shown first), ending in the prefilled ``[[``."""
        user = self.template.render(question=item.question, previous=list(item.previous), a=item.a, b=item.b)
        return render_chat(self.tok, user, self.prefill)

    def compare(self, items: Sequence[PairToJudge], *, desc: str | None = None) -> list[PairVerdict]:
        """One verdict per pair; all orders of all pairs go through one batched call."""
        if not items:
            return []
        prompts, keys, owner = [], [], []
        for n, it in enumerate(items):
            for order, shown in orders_of(it, self.both_orders):
                prompts.append(self.prompt(shown))
                keys.append((it.question, it.previous))
                owner.append((n, order))
        lp = self.engine.choice_logprobs(prompts, [self.a_ids, self.b_ids], groups=chains(keys),
                                         batch_size=self.batch_size, prefix_cache=self.prefix_cache, desc=desc,
                                         unit="prompt")
        p_first = torch.sigmoid(lp[:, 0] - lp[:, 1]).tolist()
        per_item: list[list[dict]] = [[] for _ in items]
        for (n, order), p in zip(owner, p_first, strict=True):
            p_a = p if order == "AB" else 1.0 - p
            per_item[n].append({"order": order, "p_a": p_a, "verdict": order_verdict(p_a), "raw": None})
        out = []
        for orders in per_item:
            winner, p_a = combine_orders([o["p_a"] for o in orders], self.tie_margin)
            out.append(PairVerdict(winner=winner, p_a=p_a, orders=orders))
        return out
