"""The judge registry: every judge mode, once. Importing it imports no torch, so ``presrm --help`` stays fast.

One :class:`JudgeSpec` per mode names its class (loaded on first use), the unit it judges, what it needs from
an engine, which ``judge:`` config keys feed its constructor, and which stages can use it. Everything that
lists modes reads this table: the CLI's ``--judge`` choices, config validation, judge-eval, the EFT data
builder, the loop and the benchmarks. A new mode is one :func:`register` call (or one entry below) plus its class.

>>> [m for m in modes() if spec(m).unit == "step"] == step_modes()
True
>>> search_modes()
['pointwise', 'pairwise', 'generative', 'likelihood', 'random']
>>> spec("likelihood").needs
'span_logprobs'
>>> step_judge_for("pairwise"), step_judge_for("likelihood")
('pointwise', 'likelihood')
>>> template_key("pairwise"), template_key("random")
('pairwise_template', None)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from presrm.registry import Table

UNITS = ("step", "pair", "solution")
"""What a judge scores: one step in context, two candidate next steps, or a whole solution."""
NEEDS = (None, "choice_logprobs", "span_logprobs", "generate")
"""The engine method a judge calls (``presrm.engines.Engine``); None: it never calls the engine."""


@dataclass(frozen=True)
class JudgeSpec:
    """One judge mode.

    ``target``: ``"module:Class"``, imported by :meth:`load`. ``unit``: "step" judges give per-step scores
    (evaluation reports, best-of-n and beam ranking); "pair" judges compare two candidates; "solution" judges
    score whole solutions. ``needs``: the engine method it calls. ``options``: constructor keyword -> ``judge:``
    config key, read by ``presrm.judge.make_judge_from_config`` (``batch_size`` goes to every judge).
    ``search``: it can rank step search's candidates (a run's ``judge.mode``). ``eft``: it reads a verdict
    (Yes/No, [[A]]/[[B]]) that EFT can train. ``generates``: it writes text, so ``max_new_tokens`` applies.
    ``verdicts``: a step judge's answer words for a right and a wrong step (pointwise: Yes, No), the
    completions EFT trains; a pair judge's verdict names a side instead (``[[A]]``/``[[B]]``).
    ``p_correct``: its score is the judge's probability that the step is correct, so 0.5 splits it into a
    verdict (search's pointwise agreement); other scores only rank.
    """

    mode: str
    target: str
    unit: str
    summary: str
    needs: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    search: bool = True
    eft: bool = False
    generates: bool = False
    verdicts: tuple[str, str] | None = None
    p_correct: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"judge {self.mode!r}: unit must be one of {UNITS}, got {self.unit!r}")
        if self.needs not in NEEDS:
            raise ValueError(f"judge {self.mode!r}: needs must be one of {NEEDS}, got {self.needs!r}")
        if ":" not in self.target:
            raise ValueError(f"judge {self.mode!r}: target must be 'module:Class', got {self.target!r}")
        if self.eft and self.unit == "step" and not self.verdicts:
            raise ValueError(f"judge {self.mode!r}: a step judge EFT trains needs its verdicts (right, wrong)")

    def load(self) -> type:
        """The judge class (imported now); its ``mode`` and ``unit`` must agree with this entry."""
        module, _, name = self.target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        if getattr(cls, "mode", None) != self.mode or getattr(cls, "unit", None) != self.unit:
            raise TypeError(f"{self.target} has mode={getattr(cls, 'mode', None)!r}, "
                            f"unit={getattr(cls, 'unit', None)!r}; the registry says {self.mode!r}, {self.unit!r}")
        return cls


_TABLE: Table[JudgeSpec] = Table("judge mode", "mode")
register, unregister, spec, modes = _TABLE.register, _TABLE.unregister, _TABLE.spec, _TABLE.names
"""Add a mode (``replace`` to redefine one), remove one (tests), the entry of a mode (ConfigError for an unknown
one), every mode in registration order."""


def step_modes() -> list[str]:
    """The modes that score single steps, and so give evaluations their per-step scores."""
    return [m for m, s in _TABLE.items() if s.unit == "step"]


STEP_JUDGE_FALLBACK = "pointwise"
"""The per-step judge of an evaluation when the run's judge compares two steps (pairwise, generative)."""


def step_judge_for(mode: str | None) -> str:
    """The judge that gives an evaluation its per-step scores when the run judges with ``mode``: ``mode`` itself
    when it scores single steps (pointwise, likelihood, random), else (a pair or solution judge, or no run)
    :data:`STEP_JUDGE_FALLBACK`. The loop's evaluations and ``presrm eval`` on a run's model both ask here."""
    return mode if mode in step_modes() else STEP_JUDGE_FALLBACK


def template_key(mode: str) -> str | None:
    """The ``judge:`` config key holding the prompt template of ``mode`` (None: it reads no template)."""
    return spec(mode).options.get("template")


def scores_p_correct(kind: str) -> bool:
    """Whether a score of kind ``kind`` (a tournament's ``score_kind``: a mode, or "win_rate") is a probability
    that the step is correct (``JudgeSpec.p_correct``)."""
    return kind in _TABLE and _TABLE[kind].p_correct


def search_modes() -> list[str]:
    """The modes a run can search with (``judge.mode``)."""
    return [m for m, s in _TABLE.items() if s.search]


def solution_search_modes() -> list[str]:
    """The modes a run with ``search.granularity: solution`` can rank whole solutions with: a score per solution,
    from a solution judge or a step judge's scores aggregated.

    >>> solution_search_modes()
    ['pointwise', 'outcome', 'likelihood', 'random']
    """
    return [m for m, s in _TABLE.items() if s.unit in ("step", "solution")]


def on_policy_eft_modes() -> list[str]:
    """The modes EFT can train on the policy's own labelled steps (``init.eft_sources: [on_policy]``): those with
    a verdict and no written explanation (an explanation needs the perturbation behind a gold example).

    >>> on_policy_eft_modes()
    ['pointwise', 'pairwise']
    """
    return [m for m, s in _TABLE.items() if s.eft and not s.generates]


def eft_modes() -> list[str]:
    """The modes with a verdict that EFT trains."""
    return [m for m, s in _TABLE.items() if s.eft]


def config_options(mode: str, judge_cfg: Any) -> dict[str, Any]:
    """The constructor options of ``mode`` read from a ``judge:`` config section (``batch_size`` included)."""
    entry = spec(mode)
    return {"batch_size": judge_cfg.batch_size, **{kw: getattr(judge_cfg, key) for kw, key in entry.options.items()}}


register(JudgeSpec(
    "pointwise", "presrm.judges.pointwise:PointwiseJudge", "step",
    "P(Yes) / (P(Yes) + P(No)) after 'is step k correct?'", needs="choice_logprobs",
    options={"template": "template", "prefix_cache": "prefix_cache"}, eft=True, verdicts=("Yes", "No"),
    p_correct=True))
register(JudgeSpec(
    "pairwise", "presrm.judges.pairwise:PairwiseJudge", "pair",
    "P([[A]]) vs P([[B]]) for two candidate next steps (PReSRM), both orders", needs="choice_logprobs",
    options={"template": "pairwise_template", "both_orders": "both_orders", "tie_margin": "tie_margin",
             "prefix_cache": "prefix_cache"}, eft=True))
register(JudgeSpec(
    "generative", "presrm.judges.generative:GenerativeJudge", "pair",
    "writes an explanation, then [[A]] or [[B]] (the paper's judge)", needs="generate",
    options={"template": "generative_template", "both_orders": "both_orders", "max_new_tokens": "max_new_tokens",
             "samples": "samples", "temperature": "temperature"},
    eft=True, generates=True))
register(JudgeSpec(
    "outcome", "presrm.judges.outcome:OutcomeJudge", "solution",
    "Self-Rewarding's additive 5-point rubric on whole solutions", needs="generate",
    options={"template": "outcome_template", "max_new_tokens": "max_new_tokens", "samples": "samples",
             "temperature": "temperature"}, search=False, generates=True))
register(JudgeSpec(
    "likelihood", "presrm.judges.likelihood:LikelihoodJudge", "step",
    "the model's own probability of the results a step states (no judge prompt)", needs="span_logprobs"))
register(JudgeSpec(
    "random", "presrm.judges.random:RandomJudge", "step",
    "a control, not a judge: a seeded hash of the step's text, uniform in [0, 1)", needs=None))
