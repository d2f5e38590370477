"""The self-judge: the policy model judges its own reasoning steps.

Four judges, one interface (``Judge``: ``mode``, ``unit``, ``prompt(item)``,
``tournaments(groups)``; implementations in ``presrm.judges``). Each runs on an
inference engine (``presrm.engine``: HF or vLLM), never on a model directly:

- ``PointwiseJudge`` (mode "pointwise"): is step k correct, given the question
  and steps 1..k-1? ``.score(items) -> [P(Yes) / (P(Yes) + P(No))]``, read
  from next-token logits in batched forward passes.
- ``PairwiseJudge`` (mode "pairwise", PReSRM): which of two candidate next
  steps is better? ``.compare(pairs) -> [PairVerdict]`` from P([[A]]) vs
  P([[B]]), both orders by default, a tie when they disagree;
  ``.tournament``/``.tournaments`` run round robins and count wins.
- ``GenerativeJudge`` (mode "generative", the paper's judge): the same API,
  but the model writes an explanation then ``[[A]]``/``[[B]]``; unparseable
  replies give ``winner=None``.
- ``OutcomeJudge`` (mode "outcome"): Self-Rewarding's additive 5-point rubric
  on whole solutions, ``.score(solutions) -> [points / 5 or None]``.

Score judges (pointwise, outcome) play a tournament by ranking the candidates
by score; pair judges play every match.

Prompts are Jinja templates in ``presrm/prompts/``; each judge takes
``template=`` (a file path) to override its own. Chat templates are applied
when the tokenizer has one.

>>> judge = make_judge("pairwise", engine)  # doctest: +SKIP
>>> judge.tournament("1+1?", (), ["Step 1: 1 + 1 = 2", "Step 1: 1 + 1 = 3"]).wins  # doctest: +SKIP
[1.0, 0.0]
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from presrm.errors import ConfigError
from presrm.judges.common import (
    PROMPTS,
    Judge,
    PairToJudge,
    PairVerdict,
    SolutionToJudge,
    StepToJudge,
    Tournament,
    combine_orders,
    load_template,
    rank_tournament,
)
from presrm.judges.generative import GenerativeJudge, parse_verdict
from presrm.judges.likelihood import LikelihoodJudge
from presrm.judges.outcome import OutcomeJudge, OutcomeVerdict, parse_score
from presrm.judges.pairwise import PairwiseJudge
from presrm.judges.pointwise import PointwiseJudge

if TYPE_CHECKING:
    from presrm.config import JudgeConfig

log = logging.getLogger(__name__)

__all__ = [
    "JUDGES",
    "LikelihoodJudge",
    "PROMPTS",
    "GenerativeJudge",
    "Judge",
    "OutcomeJudge",
    "OutcomeVerdict",
    "PairToJudge",
    "PairVerdict",
    "PairwiseJudge",
    "PointwiseJudge",
    "SolutionToJudge",
    "StepToJudge",
    "Tournament",
    "combine_orders",
    "load_template",
    "make_judge",
    "make_judge_from_config",
    "parse_score",
    "parse_verdict",
    "rank_tournament",
]

JUDGES: dict[str, type] = {
    "pointwise": PointwiseJudge,
    "pairwise": PairwiseJudge,
    "generative": GenerativeJudge,
    "outcome": OutcomeJudge,
    "likelihood": LikelihoodJudge,
}


def make_judge(mode: str, engine, **options: Any) -> Judge:
    """Build the judge named ``mode`` on ``engine`` with keyword ``options`` (those of its constructor).

    >>> make_judge("pairwise", engine, both_orders=False)  # doctest: +SKIP
    """
    try:
        cls = JUDGES[mode]
    except KeyError:
        raise ConfigError(f"judge.mode {mode!r} is not supported (choose: {', '.join(JUDGES)})") from None
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "engine"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"judge option(s) {', '.join(unknown)} do not apply to mode {mode!r} "
                          f"(it takes: {', '.join(sorted(accepted))})")
    return cls(engine, **options)


def make_judge_from_config(cfg: JudgeConfig, engine, *, mode: str | None = None) -> Judge:
    """The judge a ``judge:`` config section describes; ``mode`` overrides ``cfg.mode``.

    Each mode reads its own template key: ``template`` (pointwise),
    ``pairwise_template``, ``generative_template``, ``outcome_template``.
    """
    mode = mode or cfg.mode
    options: dict[str, Any] = {"batch_size": cfg.batch_size}
    if mode == "pointwise":
        options.update(template=cfg.template, prefix_cache=cfg.prefix_cache)
    elif mode == "pairwise":
        options.update(template=cfg.pairwise_template, both_orders=cfg.both_orders, tie_margin=cfg.tie_margin,
                       prefix_cache=cfg.prefix_cache)
    elif mode == "generative":
        options.update(template=cfg.generative_template, both_orders=cfg.both_orders,
                       max_new_tokens=cfg.max_new_tokens)
    elif mode == "outcome":
        options.update(template=cfg.outcome_template)
    return make_judge(mode, engine, **options)
