"""Decoding strategies for evaluation: greedy, maj@k, best-of-N, and judge-guided step beam search.

- ``greedy``: one deterministic completion per problem.
- ``maj@k`` (self-consistency): k sampled completions; under each extractor the
  answers vote (answers that normalize alike count together) and the most
  frequent wins; a tie goes to the answer that appeared first in sample order.
- ``best-of-N``: N sampled completions; the model's own judge scores each step
  (``PointwiseJudge.score``), :func:`presrm.rewards.aggregate` turns the step
  scores into a process reward, and the completion with the highest reward is
  graded (a tie goes to the lowest sample index; a completion without steps
  ranks last).
- ``beam``: step-level beam search. Each live beam is extended with
  ``beam_expand`` sampled next steps; the judge scores each candidate step and
  the ``beam_width`` candidates with the highest process reward (over the whole
  prefix) survive. A beam ends when its step states a final answer or at
  ``max_steps``; the ended beam with the best reward is graded.

Every strategy batches across problems: one engine call per round to
generate and one judge call per round. Candidate steps are parsed by
:func:`presrm.generate.step_candidates`, as in step search.

>>> majority_vote(["18", "$18.", "20", None, "20"], Match())[0]
'18'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from presrm.config import check_setting, default_of
from presrm.data import Match, Task
from presrm.errors import ConfigError
from presrm.generate import STEP_STOP, step_candidates
from presrm.grading import EvalSample, build_prompt, grade, judge_steps, score_record
from presrm.progress import bar as progress_bar
from presrm.rewards import AGGREGATORS, aggregate
from presrm.schema import Problem, Step
from presrm.steps import is_final_answer
from presrm.verify import parse_number

log = logging.getLogger(__name__)
MODES = ("greedy", "maj", "best_of_n", "beam")


@dataclass(frozen=True)
class Decoding:
    """How completions are produced (see the module docstring); ``k`` is maj@k's k or best-of-N's N."""

    mode: str = "greedy"
    k: int = 1
    temperature: float = default_of("eval.temperature")
    top_p: float = default_of("eval.top_p")
    seed: int = default_of("seed")
    aggregate: str = default_of("judge.aggregate")
    beam_width: int = default_of("eval.beam_width")
    beam_expand: int = default_of("eval.beam_expand")
    max_steps: int = default_of("eval.max_steps")
    max_step_tokens: int = default_of("eval.max_step_tokens")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"decoding mode {self.mode!r} is not one of {list(MODES)}")
        if self.aggregate not in AGGREGATORS:
            raise ConfigError(f"--aggregate must be one of {sorted(AGGREGATORS)}")
        for name in ("k", "temperature", "top_p", "beam_width", "beam_expand", "max_steps", "max_step_tokens"):
            check_setting(f"eval.{name}", getattr(self, name))  # the ranges the recipe's eval section declares
        check_setting("seed", self.seed)

    @classmethod
    def parse(cls, spec: str, **params: Any) -> Decoding:
        """``greedy``, ``maj@k`` / ``maj@8``, ``best-of-n`` / ``best-of-8``, ``beam``; ``params`` fill the rest.

        >>> Decoding.parse("maj@8").k, Decoding.parse("best-of-n", k=4).mode
        (8, 'best_of_n')
        """
        s = spec.strip().lower().replace("_", "-")
        m = re.fullmatch(r"(maj@|best-of-)(k|n|\d+)", s)
        if s in ("greedy", "beam"):
            return cls(mode=s, **params)
        if m is None:
            raise ConfigError(f"--decoding {spec!r}: use greedy, maj@k (or maj@8), best-of-n (or best-of-8), beam")
        mode = "maj" if m.group(1) == "maj@" else "best_of_n"
        if m.group(2).isdigit():
            params["k"] = int(m.group(2))
        return cls(mode=mode, **params)

    @classmethod
    def from_config(cls, cfg) -> Decoding:
        """The decoding a run recipe's ``eval:`` section asks for (aggregate from ``judge:``, seed from the run)."""
        e = cfg.eval
        return cls.parse(e.decoding, k=e.k, temperature=e.temperature, top_p=e.top_p, seed=cfg.seed,
                         aggregate=cfg.judge.aggregate, beam_width=e.beam_width, beam_expand=e.beam_expand,
                         max_steps=e.max_steps, max_step_tokens=e.max_step_tokens)

    @property
    def label(self) -> str:
        return {"greedy": "greedy", "maj": f"maj@{self.k}", "best_of_n": f"best-of-{self.k}",
                "beam": f"beam(width={self.beam_width}, expand={self.beam_expand})"}[self.mode]

    @property
    def scores_steps(self) -> bool:
        """Whether the decoding itself judges steps (and so needs a judge)."""
        return self.mode in ("best_of_n", "beam")

    def to_dict(self) -> dict[str, Any]:
        """The parameters that matter for this mode, plus its label."""
        keep = {"greedy": (), "maj": ("k", "temperature", "top_p", "seed"),
                "best_of_n": ("k", "temperature", "top_p", "seed", "aggregate"),
                "beam": ("beam_width", "beam_expand", "max_steps", "max_step_tokens", "temperature", "top_p",
                         "seed", "aggregate")}[self.mode]
        d = asdict(self)
        return {"name": self.label, "mode": self.mode, **{k: d[k] for k in keep}}


def vote_key(pred: str, match: Match) -> str:
    """What maj@k counts: lm-eval's normalization under exact_match, else the plain number's exact value.

    A plain number is what :func:`presrm.verify.parse_number` reads (``$1,000``,
    ``-3``, ``3/4``, ``1 1/2``); anything else, a zero denominator included, votes
    as its lower-cased text.

    >>> vote_key("$1,000.", Match()), vote_key("1000.0", Match()), vote_key("18 apples", Match())
    ('1000', '1000', '18 apples')
    """
    if match.kind == "exact_match":
        return match.normalize(pred)
    s = pred.strip().rstrip(".").strip()
    value = parse_number(s)
    return str(value) if value is not None else s.lower()


def majority_vote(preds: Sequence[str | None], match: Match) -> tuple[str | None, list[dict[str, Any]]]:
    """The winning answer (as first written) and the vote table, in order of first appearance."""
    table: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(preds):
        if p is None:
            continue
        entry = table.setdefault(vote_key(p, match), {"answer": p, "count": 0, "first": i})
        entry["count"] += 1
    votes = list(table.values())
    best = max(votes, key=lambda v: v["count"], default=None)  # max keeps the first of equals
    return (best["answer"] if best else None), votes


def weighted_vote(preds: Sequence[str | None], weights: Sequence[float | None],
                  match: Match) -> str | None:
    """The answer whose candidates carry the most weight in all (a judge's process rewards): maj@k where each
    vote counts its weight. A candidate without an answer or a weight does not vote; a tie goes to the answer
    that appeared first.

    >>> weighted_vote(["18", "20", "20", "$18."], [0.9, 0.3, 0.4, 0.2], Match())
    '18'
    """
    table: dict[str, list[Any]] = {}  # key -> [answer as first written, total weight]
    for p, w in zip(preds, weights, strict=True):
        if p is None or w is None:
            continue
        table.setdefault(vote_key(p, match), [p, 0.0])[1] += w
    return max(table.values(), key=lambda v: v[1], default=[None])[0]


def decode(engine, task: Task, problems: Sequence[Problem], shots: Sequence[Problem], decoding: Decoding, *,
           max_new_tokens: int, batch_size: int, judge=None, label: str = "eval") -> list[EvalSample]:
    """Run ``decoding`` on every problem with ``engine`` and grade the result (one :class:`EvalSample` each)."""
    if decoding.scores_steps and judge is None:
        raise ConfigError(f"decoding {decoding.label} ranks by the judge's step scores; it needs a judge "
                          "(drop --no-judge-steps)")
    prompts = [build_prompt(engine.tok, task, p.question, shots) for p in problems]
    if decoding.mode == "beam":
        prefix = "" if _step_format(task) else None
        bases = [build_prompt(engine.tok, task, p.question, shots, prefix=prefix) for p in problems]
        return beam_search(engine, task, problems, bases, decoding, judge=judge, batch_size=batch_size, label=label)
    if decoding.mode == "greedy":
        texts = engine.greedy(prompts, max_new_tokens=max_new_tokens, stop=task.stop, batch_size=batch_size,
                              desc=f"{label}: generate")
        return [score_record(p, task.response_prefix + t, task) for p, t in zip(problems, texts, strict=True)]
    outs = engine.generate(prompts, max_new_tokens=max_new_tokens, n=decoding.k, temperature=decoding.temperature,
                           top_p=decoding.top_p, stop=task.stop, seed=decoding.seed, batch_size=batch_size,
                           desc=f"{label}: generate")
    groups = [[score_record(p, task.response_prefix + c, task) for c in o] for p, o in zip(problems, outs, strict=True)]
    if decoding.mode == "maj":
        return [_majority_record(task, g) for g in groups]
    return _best_of_n(judge, groups, decoding, label)


def _candidate(s: EvalSample) -> dict[str, Any]:
    return {"completion": s.completion, "pred_strict": s.pred_strict, "pred_flexible": s.pred_flexible,
            "correct_strict": s.correct_strict, "correct_flexible": s.correct_flexible}


def _majority_record(task: Task, group: list[EvalSample]) -> EvalSample:
    """Grade the voted answers; show the first sample whose flexible answer won."""
    winners, votes = {}, {}
    for name in task.extractors:
        winners[name], votes[name] = majority_vote([getattr(s, f"pred_{name}") for s in group], task.match)
    flex = winners.get("flexible")
    key = vote_key(flex, task.match) if flex is not None else None
    chosen = next((i for i, s in enumerate(group)
                   if s.pred_flexible is not None and vote_key(s.pred_flexible, task.match) == key), 0)
    candidates = [_candidate(s) for s in group]  # before the shown record's answers become the voted ones
    rec = group[chosen]
    for name, pred in winners.items():
        setattr(rec, f"pred_{name}", pred)
        setattr(rec, f"correct_{name}", task.match.correct(pred, rec.target))
    rec.candidates, rec.chosen, rec.votes = candidates, chosen, votes
    return rec


def _best_of_n(judge, groups: list[list[EvalSample]], decoding: Decoding, label: str) -> list[EvalSample]:
    """Judge every step of every candidate, then keep each problem's candidate with the highest reward."""
    judge_steps(judge, [s for g in groups for s in g], desc=f"{label}: judge {decoding.label}")
    out = []
    for g in groups:
        rewards = [aggregate(s.step_scores, decoding.aggregate) if s.step_scores else None for s in g]
        chosen = max(range(len(g)), key=lambda i: (rewards[i] is not None, rewards[i] or 0.0, -i))
        rec = g[chosen]
        rec.candidates = [{**_candidate(s), "step_scores": s.step_scores, "process_reward": r}
                          for s, r in zip(g, rewards, strict=True)]
        rec.chosen, rec.process_reward = chosen, rewards[chosen]
        out.append(rec)
    return out


@dataclass
class _Beam:
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    final: bool = False

    def reward(self, how: str) -> float:
        return aggregate(self.scores, how) if self.scores else 0.0


def _step_format(task: Task) -> bool:
    """Tasks whose answers start with ``Step 1:`` are searched step by step; others line by line."""
    return task.response_prefix.strip().lower().startswith("step")


def _beam_prompt(task: Task, base: str, beam: _Beam) -> str:
    """The prompt (without the response prefix for step tasks), the steps so far, then ``Step n:``."""
    marker = f"Step {len(beam.steps) + 1}:" if _step_format(task) else ""
    return base + "".join(s + "\n" for s in beam.steps) + marker


def beam_search(engine, task: Task, problems: Sequence[Problem], bases: Sequence[str], dec: Decoding, *,
                judge, batch_size: int, label: str = "eval") -> list[EvalSample]:
    """Step-level beam search guided by the judge's process reward (see the module docstring)."""
    from presrm.judge import StepToJudge

    live: list[list[_Beam]] = [[_Beam()] for _ in problems]
    done: list[list[_Beam]] = [[] for _ in problems]
    traces: list[list[dict[str, Any]]] = [[] for _ in problems]
    stop = [STEP_STOP if _step_format(task) else "\n", *task.stop]
    for rnd in progress_bar(range(1, dec.max_steps + 1), desc=f"{label}: {dec.label}", unit="step"):
        flat = [(pi, b) for pi, beams in enumerate(live) for b in beams]
        if not flat:
            break
        raw = engine.generate([_beam_prompt(task, bases[pi], b) for pi, b in flat], max_new_tokens=dec.max_step_tokens,
                              n=dec.beam_expand, temperature=dec.temperature, top_p=dec.top_p, stop=stop,
                              seed=dec.seed * 1000 + rnd, batch_size=batch_size)
        step_no = _step_format(task)
        cands = [step_candidates(r, len(b.steps) + 1 if step_no else None) for (_, b), r in zip(flat, raw, strict=True)]
        items = [StepToJudge(problems[pi].question, tuple(b.steps), c)
                 for (pi, b), cs in zip(flat, cands, strict=True) for c in cs]
        scores = iter(judge.score(items) if items else [])
        pool: list[list[tuple[int, _Beam, str, float, float]]] = [[] for _ in problems]
        for j, ((pi, b), cs) in enumerate(zip(flat, cands, strict=True)):
            if not cs:  # the model stopped: this beam ends as it is
                done[pi].append(b)
            for c in cs:
                s = next(scores)
                pool[pi].append((j, b, c, s, _Beam(b.steps + [c], b.scores + [s]).reward(dec.aggregate)))
        for pi, cands_pi in enumerate(pool):
            if not cands_pi:
                live[pi] = []
                continue
            ranked = sorted(range(len(cands_pi)), key=lambda i: -cands_pi[i][4])[:dec.beam_width]
            new = []
            for i in ranked:
                _, b, c, s, _ = cands_pi[i]
                nb = _Beam(b.steps + [c], b.scores + [s], final=is_final_answer(c))
                (done[pi] if nb.final or rnd == dec.max_steps else new).append(nb)
            live[pi] = new
            traces[pi].append({"step": rnd, "candidates": [
                {"beam": j, "text": c, "score": s, "process_reward": r, "kept": i in ranked}
                for i, (j, _, c, s, r) in enumerate(cands_pi)]})
    return [_beam_record(task, p, done[pi] + live[pi], traces[pi], dec)
            for pi, p in enumerate(problems)]


def _beam_record(task: Task, problem: Problem, ended: list[_Beam], trace: list[dict[str, Any]],
                 dec: Decoding) -> EvalSample:
    """Grade the best ended beam (final-answer beams first); its steps are exactly the beam's steps."""
    best = max(ended, key=lambda b: (b.final, b.reward(dec.aggregate)), default=_Beam())
    completion = "\n".join(best.steps)
    starts = [sum(len(t) + 1 for t in best.steps[:i]) for i in range(len(best.steps))]
    steps = [Step(i, t, a, a + len(t)) for i, (t, a) in enumerate(zip(best.steps, starts, strict=True))]
    rec = score_record(problem, completion, task, steps=steps)
    rec.step_scores = list(best.scores)
    rec.process_reward = best.reward(dec.aggregate) if best.scores else None
    rec.search = trace
    rec.candidates = [{"completion": "\n".join(b.steps), "final": b.final, "step_scores": b.scores,
                       "process_reward": b.reward(dec.aggregate) if b.scores else None,
                       **grade(task, "\n".join(b.steps), rec.target)} for b in ended]
    rec.chosen = ended.index(best) if best in ended else None
    return rec
