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
``template=`` (a file path) to override its own (config key: ``template_key(mode)``). Chat templates are
applied when the tokenizer has one.

One builder, :func:`make_judge_from_config`, turns a ``judge:`` section (every setting) and the run's context
(task, tasks folder, seed) into a judge; :func:`judge_config` makes such a section from command-line flags.
Which judge gives an evaluation its per-step scores is :func:`step_judge_for` (the registry's).

>>> judge = make_judge("pairwise", engine)  # doctest: +SKIP
>>> judge.tournament("1+1?", (), ["Step 1: 1 + 1 = 2", "Step 1: 1 + 1 = 3"]).wins  # doctest: +SKIP
[1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Sequence
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
from presrm.judges.registry import (
    JudgeSpec,
    config_options,
    modes,
    register,
    spec,
    step_judge_for,
    step_modes,
    template_key,
)

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
    "check_templates",
    "combine_orders",
    "context_options",
    "judge_class",
    "judge_config",
    "load_template",
    "make_judge",
    "make_judge_from_config",
    "modes",
    "parse_score",
    "parse_verdict",
    "rank_tournament",
    "register",
    "step_judge_for",
    "step_modes",
    "template_key",
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
    """The judge a ``judge:`` config section describes; ``mode`` overrides ``cfg.mode``. The one builder: step
    search, the loop's evaluations and judge evaluations, ``presrm eval`` and ``presrm judge-eval`` all build
    their judge here (the commands from a section made of their flags, :func:`judge_config`).

    Each mode reads the config keys its registry entry lists (``JudgeSpec.options``: ``template`` for
    pointwise, ``pairwise_template``, ``generative_template``, ``outcome_template`` ...).
    ``task``, ``tasks_dir`` and ``seed`` go to the modes that take them (:func:`context_options`).
    """
    mode = mode or cfg.mode
    options = config_options(mode, cfg)
    options.update(context_options(mode, task=task, tasks_dir=tasks_dir, seed=seed))
    return make_judge(mode, engine, **options)


def judge_config(mode: str, *, base: JudgeConfig | None = None, template: str | None = None,
                 **settings: Any) -> JudgeConfig:
    """A ``judge:`` section for ``mode``: ``base`` (default: the section's own defaults) with ``template`` under
    the mode's template key (:func:`presrm.judges.registry.template_key`) and every setting that is not None.

    >>> judge_config("pairwise", template="p.jinja", tie_margin=0.0, batch_size=None).pairwise_template
    'p.jinja'
    """
    from presrm.config import JudgeConfig

    cfg = dataclasses.replace(base or JudgeConfig(), mode=mode,
                              **{k: v for k, v in settings.items() if v is not None})
    if template is not None:
        key = template_key(mode)
        if key is None:
            raise ConfigError(f"the {mode} judge reads no prompt template; judges with one: "
                              f"{', '.join(m for m in modes() if template_key(m))}")
        cfg = dataclasses.replace(cfg, **{key: template})
    return cfg


def check_templates(cfg: JudgeConfig, built: Sequence[str]) -> None:
    """Read every template the ``judge:`` section names, whichever mode it belongs to, so that a broken one fails
    now as a ConfigError naming its key; ``built``: the modes the caller builds (a named template of another
    mode is logged as unused)."""
    for mode in modes():
        key = template_key(mode)
        path = getattr(cfg, key) if key else None
        if path is None:
            continue
        cls = judge_class(mode)
        try:
            load_template(path, mode, **cls.template_sample)
        except ConfigError as e:
            raise ConfigError(f"key 'judge.{key}': {e}") from None
        if mode not in built:
            log.warning("judge.%s is set, but this run builds no %s judge (it builds: %s)", key, mode,
                        ", ".join(dict.fromkeys(built)))
