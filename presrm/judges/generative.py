"""Generative pairwise judge (the PReSRM paper's judge): an explanation, then ``[[A]]`` or ``[[B]]``.

Greedy decoding (no sampling), capped at ``max_new_tokens``. The verdict is
read by ``parse_verdict``, which prefers the last ``[[A]]``/``[[B]]`` and
returns None instead of guessing; an unparseable reply in any order makes the
pair's ``winner`` None. The raw replies are kept in ``PairVerdict.orders``.

>>> parse_verdict("Step A adds correctly, step B does not. [[A]]")
'A'
>>> parse_verdict("Both steps look fine to me.") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from presrm.generate import render_chat
from presrm.judges.common import (
    PairJudgeBase,
    PairToJudge,
    PairVerdict,
    combine_orders,
    judgments,
    load_template,
    order_verdict,
)
from presrm.judges.pairwise import PAIR_SAMPLE, orders_of

_STEP = r"(?:(?i:step|candidate|assistant|response)\s*)?"
# Tier 1: the requested format. Tier 2: single brackets. Tier 3: a labelled verdict ("Verdict: B").
_TIERS = [
    re.compile(r"\[\[\s*" + _STEP + r"([ABab])\s*(?:\]\]?|$)"),  # "[[A]" or a reply cut at "[[A" too
    re.compile(r"(?<!\[)\[\s*" + _STEP + r"([AB])\s*\](?!\])"),
    re.compile(r"(?i:\b(?:final\s+)?(?:verdict|answer|choice|decision)\b)(?:\s+(?i:is))?\s*[:=\-]?\s*[*_\"'(\s]*"
               + _STEP + r"([AB])\b(?![^\s.,;:!?)*_\"'])"),
]
# Tier 4: free phrases; used only when every one found names the same step.
_PHRASES = [
    re.compile(r"(?<![\w-])" + _STEP + r"([AB])\s+(?i:is\s+(?:clearly\s+|the\s+)?(?:better|superior|preferred|"
               r"more\s+(?:correct|accurate|helpful|appropriate)|the\s+(?:better|correct)\s+(?:step|choice|one)))\b"),
    re.compile(r"(?i:\b(?:choose|prefer|pick|select)\s+)" + _STEP + r"([AB])\b(?![^\s.,;:!?)*_\"'])"),
]
_UNDECIDED = re.compile(r"(?i)\b(?:neither|equally|tie|tied)\b")


def parse_verdict(text: str) -> str | None:
    """"A" or "B" from a generative judge's reply, or None when it names no step unambiguously.

    Tiers, first hit wins: the last ``[[A]]``/``[[B]]`` (also ``[[A]`` and a
    reply cut off at ``[[A``); else the last
    ``[A]``/``[B]``; else the last labelled verdict (``Verdict: B``,
    ``final answer: Step A``); else phrases such as "Step A is better" or
    "I choose B", only when they all agree and no "neither"/"equally"/"tie"
    appears.
    """
    for pattern in _TIERS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    if _UNDECIDED.search(text):
        return None
    letters = {m for p in _PHRASES for m in p.findall(text)}
    return letters.pop() if len(letters) == 1 else None


def _in_a_terms(shown: str | None, order: str) -> str | None:
    """A verdict read from a reply to the order ``order`` ("AB": A shown first), named in the pair's own terms."""
    return shown if order == "AB" or shown is None else {"A": "B", "B": "A"}[shown]


class GenerativeJudge(PairJudgeBase):
    """Pairwise verdicts written out by the model (explanation, then ``[[A]]``/``[[B]]``).

    Same ``compare``/``tournament``/``tournaments`` API as ``PairwiseJudge``;
    per order, ``p_a`` is 1.0 or 0.0 (None when unparseable), so two orders
    that disagree give a tie.

    >>> judge = GenerativeJudge(engine, max_new_tokens=128)  # doctest: +SKIP
    """

    mode = "generative"
    prefill = ""
    template_sample = PAIR_SAMPLE

    def __init__(self, engine, *, template: str | None = None, batch_size: int = 8, both_orders: bool = True,
                 max_new_tokens: int = 128, samples: int = 1, temperature: float = 0.7, seed: int = 0):
        self.engine, self.tok, self.batch_size = engine, engine.tok, batch_size
        self.both_orders, self.max_new_tokens = both_orders, max_new_tokens
        self.samples, self.temperature, self.seed = samples, temperature, seed
        self.template = load_template(template, self.mode, **self.template_sample)

    def prompt(self, item: PairToJudge) -> str:
        """The exact text the model sees (A shown first; the chat template's assistant turn, nothing prefilled)."""
        user = self.template.render(question=item.question, previous=list(item.previous), a=item.a, b=item.b)
        return render_chat(self.tok, user, self.prefill)

    def compare(self, items: Sequence[PairToJudge], *, desc: str | None = None) -> list[PairVerdict]:
        """One verdict per pair; all orders of all pairs are decoded in one engine call.

        With ``samples`` k > 1 each order gets k sampled judgments; its ``p_a`` is the share of its parseable
        verdicts that name A (None when none parses), so a split vote is a tie, as two orders that disagree are.
        """
        prompts, owner = [], []
        for n, it in enumerate(items):
            for order, shown in orders_of(it, self.both_orders):
                prompts.append(self.prompt(shown))
                owner.append((n, order))
        replies = judgments(self.engine, prompts, samples=self.samples, temperature=self.temperature,
                            max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=self.seed,
                            desc=desc)
        per_item: list[list[dict]] = [[] for _ in items]
        for (n, order), sampled in zip(owner, replies, strict=True):
            votes = [_in_a_terms(parse_verdict(reply), order) for reply in sampled]
            read = [v for v in votes if v is not None]
            p_a = sum(v == "A" for v in read) / len(read) if read else None
            entry = {"order": order, "p_a": p_a, "verdict": order_verdict(p_a), "raw": "\n\n".join(sampled)}
            if self.samples > 1:
                entry["votes"] = votes
            per_item[n].append(entry)
        out = []
        for orders in per_item:
            winner, p_a = combine_orders([o["p_a"] for o in orders], tie_margin=0.0)
            raw = "\n\n".join(f"[{o['order']}] {o['raw']}" for o in orders)
            out.append(PairVerdict(winner=winner, p_a=p_a, orders=orders, raw=raw))
        return out
