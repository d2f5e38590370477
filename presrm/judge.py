"""The self-judge: the policy model judges its own reasoning steps.

Five judges and a control, one registry (``presrm.judges.registry``: mode, class, unit, what each needs
from an engine, its config keys), one interface (``Judge``: ``mode``, ``unit``, ``prompt(item)``,
``tournaments(groups)``; implementations in ``presrm.judges``). Each runs on an
inference engine (``presrm.engines``: HF or vLLM), never on a model directly:

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
- ``LikelihoodJudge`` (mode "likelihood"): the model's own probability of the
  results a step states; no judge prompt.
- ``RandomJudge`` (mode "random"): a control, not a judge: a seeded hash of
  the step's text, uniform in [0, 1); it never calls the model.

Score judges (pointwise, likelihood, random, outcome) play a tournament by
ranking the candidates by score; pair judges play every match. Judges whose
unit is "step" (pointwise, likelihood, random) also give per-step scores
(``step_modes()``).

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
from presrm.judges.random import RandomJudge
from presrm.judges.registry import JudgeSpec, config_options, modes, register, spec, step_modes

if TYPE_CHECKING:
    from presrm.config import JudgeConfig

log = logging.getLogger(__name__)

__all__ = [
    "LikelihoodJudge",
    "PROMPTS",
    "GenerativeJudge",
    "Judge",
    "JudgeSpec",
    "OutcomeJudge",
    "OutcomeVerdict",
    "PairToJudge",
    "PairVerdict",
    "PairwiseJudge",
    "PointwiseJudge",
    "RandomJudge",
    "SolutionToJudge",
    "StepToJudge",
    "Tournament",
    "combine_orders",
    "context_options",
    "judge_class",
    "load_template",
    "make_judge",
    "make_judge_from_config",
    "modes",
    "parse_score",
    "parse_verdict",
    "rank_tournament",
    "register",
    "step_modes",
]


def judge_class(mode: str) -> type:
    """The class of judge ``mode`` (its registry entry's ``target``); an unknown mode is a ConfigError."""
    return spec(mode).load()


def make_judge(mode: str, engine, **options: Any) -> Judge:
    """Build the judge named ``mode`` on ``engine`` with keyword ``options`` (those of its constructor).

    >>> make_judge("pairwise", engine, both_orders=False)  # doctest: +SKIP
    """
    cls = judge_class(mode)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "engine"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"judge option(s) {', '.join(unknown)} do not apply to mode {mode!r} "
                          f"(it takes: {', '.join(sorted(accepted))})")
    return cls(engine, **options)


def context_options(mode: str, *, task: str | None = None, tasks_dir: str | None = None,
                    seed: int | None = None) -> dict[str, Any]:
    """The run's context a mode's constructor takes: the task the steps come from (likelihood: the policy's
    own prompt), the tasks folder, the seed (random). Options it does not take, or left None, are left out.

    >>> context_options("random", task="gsm8k", seed=3)
    {'seed': 3}
    """
    if mode not in modes():
        return {}
    cls = judge_class(mode)
    accepted = inspect.signature(cls.__init__).parameters
    given = {"task": task, "tasks_dir": tasks_dir, "seed": seed}
    return {k: v for k, v in given.items() if v is not None and k in accepted}


def make_judge_from_config(cfg: JudgeConfig, engine, *, mode: str | None = None, task: str | None = None,
                           tasks_dir: str | None = None, seed: int | None = None) -> Judge:
    """The judge a ``judge:`` config section describes; ``mode`` overrides ``cfg.mode``.

    Each mode reads the config keys its registry entry lists (``JudgeSpec.options``: ``template`` for
    pointwise, ``pairwise_template``, ``generative_template``, ``outcome_template`` ...).
    ``task``, ``tasks_dir`` and ``seed`` go to the modes that take them (:func:`context_options`).
    """
    mode = mode or cfg.mode
    options = config_options(mode, cfg)
    options.update(context_options(mode, task=task, tasks_dir=tasks_dir, seed=seed))
    return make_judge(mode, engine, **options)
