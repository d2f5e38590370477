"""Grading one completion: the prompt it answers, its extracted answers, its steps' verdicts and scores.

The pieces :mod:`presrm.decoding` builds its records from and :mod:`presrm.evaluate`
summarises (both import this module; it imports neither):

- ``build_prompt``: the exact text the model continues (shots, question, response prefix);
- ``grade`` / ``score_record``: extract the answer under each of the task's extractors, match it
  against the reference, segment and verify the steps (an :class:`EvalSample`);
- ``judge_steps``: the pointwise judge's score for every step of every record;
- ``step_counts`` / ``record_step_counts``: how many steps the verifier decided, how many of
  them have wrong arithmetic, how many checks ran out of time; ``step_error_rate``: the
  pooled share of wrong verifiable steps over problems, with its bootstrap interval;
- ``repeats_a_step``: whether a shown solution states one step twice, word for word (a
  degeneration the verifier cannot see: a repeated right step is still right).

>>> from presrm.schema import Problem
>>> s = score_record(Problem(id="p", question="q", answer="7"), "Step 1: 3 + 4 = 7\\nThe answer is 7.")
>>> (s.pred_strict, s.correct_strict, s.correct_flexible)
('7', True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from presrm.data import DEFAULT_EXTRACTORS, Fewshot, Match, Task, shot_target
from presrm.schema import EvalRecord, Problem, Step
from presrm.stats import bootstrap_ci, pooled_ratio
from presrm.steps import segment, step_body
from presrm.verify import check_step, is_timeout


@dataclass
class EvalSample(EvalRecord):
    """One evaluated problem: an :class:`EvalRecord` plus what the decoding did.

    ``target`` is the reference the extracted answers were matched with (the
    gold final answer, or the whole gold answer field under lm-eval's protocol).
    ``candidates`` holds every sampled completion with its answers (maj@k,
    best-of-N; with its step scores and process reward for best-of-N), ``chosen``
    the index of the one shown in ``completion``, ``votes`` the answer counts
    per extractor (maj@k), ``search`` the beam search's rounds (beam).
    ``steps_verifiable``, ``steps_wrong`` and ``steps_timed_out`` count the shown
    solution's steps that the verifier decided (correct or incorrect), found wrong, and
    gave up on for time (:func:`step_counts`); None where they were not computed.
    """

    target: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen: int | None = None
    votes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    process_reward: float | None = None
    search: list[dict[str, Any]] = field(default_factory=list)
    steps_verifiable: int | None = None
    steps_wrong: int | None = None
    steps_timed_out: int | None = None


def build_prompt(tok, task: Task, question: str, shots: Sequence[Problem] = (), prefix: str | None = None) -> str:
    """The exact text the policy continues: shots, the question, then ``prefix`` (default: the response prefix).

    The one policy prompt: evaluation calls it with the task's shots (:func:`presrm.data.load_shots`),
    and so do step search, the natural set, IFT examples and the likelihood judge, with the response
    written so far as ``prefix`` (:func:`presrm.generate.step_prompt`). ``prefix`` always ends the text,
    so a longer response gives a longer text that starts with the shorter one's (non-empty) text.

    With ``task.chat_template`` and a tokenizer that has one, each shot is a
    user turn plus an assistant turn and the question is the last user turn.
    Otherwise (lm-eval's plain layout) shots are ``prompt + target_delimiter +
    target`` joined by the fewshot delimiter before the question's prompt, and a
    non-empty prefix follows the question after the target delimiter. The task's
    prompt renders in the sandbox of :mod:`presrm.templating`.
    """
    template = task.template()
    prefix = task.response_prefix if prefix is None else prefix
    if task.chat_template and getattr(tok, "chat_template", None):
        messages: list[dict[str, str]] = []
        for s in shots:
            messages += [{"role": "user", "content": template.render(question=s.question)},
                         {"role": "assistant", "content": shot_target(task, s)}]
        messages.append({"role": "user", "content": template.render(question=question)})
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
    text = template.render(question=question)
    fs = task.fewshot or Fewshot()
    if shots:
        parts = [template.render(question=s.question) + fs.target_delimiter + shot_target(task, s) for s in shots]
        text = fs.delimiter.join([*parts, text])
    if task.chat_template:  # a chat task on a tokenizer without a template: presrm's plain layout
        return text + "\n\n" + prefix
    # lm-eval's layout: a non-empty answer prefix follows the question as a shot's target would.
    return text + (fs.target_delimiter + prefix if prefix else "")


def grade(task: Task | None, completion: str, reference: str) -> dict[str, Any]:
    """Extracted answer and correctness under each of the task's extractors (strict, flexible)."""
    extractors = task.extractors if task is not None else DEFAULT_EXTRACTORS
    match = task.match if task is not None else Match()
    out: dict[str, Any] = {}
    for name, ex in extractors.items():
        pred = ex.extract(completion)
        out[f"pred_{name}"] = pred
        out[f"correct_{name}"] = match.correct(pred, reference)
    return out


def score_record(problem: Problem, completion: str, task: Task | None = None,
                 steps: Sequence[Step] | None = None) -> EvalSample:
    """Segment (unless ``steps`` are given), verify and grade one completion against its gold answer."""
    match = task.match if task is not None else Match()
    reference = match.reference(problem)
    steps = list(steps) if steps is not None else segment(completion)
    checks = [check_step(s.text).to_dict() for s in steps]
    return EvalSample(
        id=problem.id, question=problem.question, gold=problem.answer, completion=completion,
        steps=[s.to_dict() for s in steps], step_checks=checks,
        target=reference, **grade(task, completion, reference), **step_counts(checks),
    )


STEP_COUNT_FIELDS = ("steps_wrong", "steps_verifiable", "steps_timed_out")
"""The per-problem counts behind the step error rate, as named in ``samples.jsonl``."""
STEP_RESAMPLES = 2000
"""Bootstrap resamples (of problems) behind the step error rate's interval; seeded with ``STEP_SEED``."""
STEP_SEED = 0


def step_counts(checks: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts of a solution's step checks (``StepCheck.to_dict()``): decided, wrong, timed out.

    A step is verifiable when the verifier decided it (``correct`` or ``incorrect``);
    a timed-out check is ``unverifiable`` (:func:`presrm.verify.is_timeout`).

    >>> step_counts([{"verdict": "correct"}, {"verdict": "incorrect"}, {"verdict": "unverifiable"}])
    {'steps_wrong': 1, 'steps_verifiable': 2, 'steps_timed_out': 0}
    """
    return {"steps_wrong": sum(c.get("verdict") == "incorrect" for c in checks),
            "steps_verifiable": sum(c.get("verdict") in ("correct", "incorrect") for c in checks),
            "steps_timed_out": sum(is_timeout(c) for c in checks)}


def record_field(record: Any, key: str) -> Any:
    """``record``'s ``key``: an attribute of a record object or a key of a samples.jsonl dict; None when absent."""
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


def record_step_counts(record: Any) -> tuple[int, int, int] | None:
    """``(steps_wrong, steps_verifiable, steps_timed_out)`` of a record (an object or a samples.jsonl dict).

    None when the record does not carry them (samples written before these counts existed).

    >>> record_step_counts({"steps_wrong": 1, "steps_verifiable": 3, "steps_timed_out": 0}), record_step_counts({})
    ((1, 3, 0), None)
    """
    wrong, verifiable, timed_out = (record_field(record, k) for k in STEP_COUNT_FIELDS)
    if wrong is None or verifiable is None or timed_out is None:
        return None
    return int(wrong), int(verifiable), int(timed_out)


def repeats_a_step(record: Any) -> bool:
    """Whether the record's shown solution states one step twice, word for word (``Step n:`` markers aside).

    ``record`` is an :class:`EvalRecord` or a samples.jsonl dict; its steps are dicts with ``text``
    or :class:`Step` objects. Empty steps are ignored.

    >>> repeats_a_step({"steps": [{"text": "Step 1: 3 + 4 = 7"}, {"text": "Step 2: 3 + 4 = 7"}]})
    True
    >>> repeats_a_step({"steps": [{"text": "Step 1: 3 + 4 = 7"}, {"text": "Step 2: 7 * 2 = 14"}]})
    False
    """
    bodies = [step_body(record_field(s, "text") or "") for s in record_field(record, "steps") or ()]
    bodies = [b for b in bodies if b]
    return len(set(bodies)) < len(bodies)


def step_error_rate(ids: Sequence[str], counts: Sequence[tuple[int, int]], *, resamples: int = STEP_RESAMPLES,
                    seed: int = STEP_SEED) -> dict[str, Any]:
    """The pooled share of wrong verifiable steps, with a 95% bootstrap interval over problems.

    ``counts[i]`` is ``(steps_wrong, steps_verifiable)`` of problem ``ids[i]``. The rate is
    sum wrong / sum verifiable (a ratio estimator, not the mean of per-problem rates); the
    interval resamples problems ``resamples`` times with ``random.Random(seed)``. The rate
    (and the interval) is None when no step is verifiable.

    >>> r = step_error_rate(["a", "b", "c"], [(1, 4), (0, 0), (2, 6)], resamples=200)
    >>> r["rate"], r["wrong"], r["verifiable"], r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    (0.3, 3, 10, True)
    """
    wrong, verifiable = sum(w for w, _ in counts), sum(v for _, v in counts)
    return {"rate": pooled_ratio(counts), "wrong": wrong, "verifiable": verifiable, "problems": len(counts),
            "ci95": bootstrap_ci(ids, counts, pooled_ratio, resamples=resamples, seed=seed) if verifiable else None,
            "resamples": resamples, "seed": seed}


def judge_agreement(records: Sequence[Any], *, resamples: int = STEP_RESAMPLES, seed: int = STEP_SEED
                    ) -> dict[str, Any] | None:
    """How well the per-step scores of ``records`` tell the verifier's right steps from its wrong ones: the step
    AUROC (a right step scored above a wrong one; ties half) with a 95% bootstrap interval over problems.

    None when no record has step scores; ``value`` None when the verifier found no right or no wrong step.

    >>> recs = [{"id": "a", "step_scores": [0.9, 0.2], "step_checks": [{"verdict": "correct"},
    ...                                                                 {"verdict": "incorrect"}]}]
    >>> judge_agreement(recs, resamples=10)["value"], judge_agreement([{"id": "b", "step_scores": []}])
    (1.0, None)
    """
    from presrm.judge_eval.metrics import auroc

    known = []
    for rec in records:
        scores, checks = record_field(rec, "step_scores") or [], record_field(rec, "step_checks") or []
        known += [(str(record_field(rec, "id")), (score, check.get("verdict") == "correct"))
                  for score, check in zip(scores, checks, strict=False)
                  if score is not None and check.get("verdict") in ("correct", "incorrect")]
    if not any(record_field(rec, "step_scores") for rec in records):
        return None

    def stat(items: list[tuple[float, bool]]) -> float | None:
        return auroc([x for x, _ in items], [y for _, y in items])

    items = [k for _, k in known]
    return {"value": stat(items), "ci95": bootstrap_ci([c for c, _ in known], items, stat, resamples=resamples,
                                                       seed=seed) if stat(items) is not None else None,
            "n_correct": sum(y for _, y in items), "n_incorrect": sum(not y for _, y in items)}


def judge_steps(judge, records: Sequence[EvalRecord], *, desc: str | None = None) -> None:
    """Score every step of every record with the judge (in context of the steps before it), in place."""
    from presrm.judges.common import StepToJudge

    items, owners = [], []
    for r in records:
        texts = [s["text"] for s in r.steps]
        r.step_scores = []
        for i, t in enumerate(texts):
            items.append(StepToJudge(r.question, tuple(texts[:i]), t))
            owners.append(r)
    for r, s in zip(owners, judge.score(items, desc=desc) if items else [], strict=True):
        r.step_scores.append(s)
