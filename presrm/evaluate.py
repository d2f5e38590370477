"""GSM8K-style accuracy under a recorded protocol: strict and flexible extraction, exact matching.

``evaluate`` decodes every problem (greedy, maj@k, best-of-N or judge-guided
step beam search; see :mod:`presrm.decoding`), grades each answer under the
task's extractors and matcher, and returns a summary (accuracy with a 95%
Wilson interval, the protocol that produced it, wall time) plus one
:class:`EvalSample` per problem. The accuracy is recomputable from
``samples.jsonl`` alone: each line holds the extracted answers, the reference
they were matched with, and the correctness under each extractor.

>>> from presrm.schema import Problem
>>> s = score_record(Problem(id="p", question="q", answer="7"), "Step 1: 3 + 4 = 7\\nThe answer is 7.")
>>> (s.pred_strict, s.correct_strict, s.correct_flexible)
('7', True, True)
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from presrm.data import DEFAULT_EXTRACTORS, Fewshot, Match, Task, load_shots, shot_target
from presrm.jsonio import write_json, write_jsonl
from presrm.schema import SCHEMA_VERSION, EvalRecord, Problem, Step
from presrm.steps import segment
from presrm.verify import check_step

log = logging.getLogger(__name__)
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
DEFAULT_MAX_NEW_TOKENS = 320


@dataclass
class EvalSample(EvalRecord):
    """One evaluated problem: an :class:`EvalRecord` plus what the decoding did.

    ``target`` is the reference the extracted answers were matched with (the
    gold final answer, or the whole gold answer field under lm-eval's protocol).
    ``candidates`` holds every sampled completion with its answers (maj@k,
    best-of-N; with its step scores and process reward for best-of-N), ``chosen``
    the index of the one shown in ``completion``, ``votes`` the answer counts
    per extractor (maj@k), ``search`` the beam search's rounds (beam).
    """

    target: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen: int | None = None
    votes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    process_reward: float | None = None
    search: list[dict[str, Any]] = field(default_factory=list)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion.

    >>> tuple(round(x, 4) for x in wilson_interval(5, 10))
    (0.2366, 0.7634)
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def build_prompt(tok, task: Task, question: str, shots: Sequence[Problem] = (), prefix: str | None = None) -> str:
    """The exact text the model continues: shots, the question, then ``prefix`` (default: the response prefix).

    With ``task.chat_template`` and a tokenizer that has one, each shot is a
    user turn plus an assistant turn and the question is the last user turn.
    Otherwise (lm-eval's plain layout) shots are ``prompt + target_delimiter +
    target`` joined by the fewshot delimiter before the question's prompt, and a
    non-empty prefix follows the question after the target delimiter.
    """
    template = _JINJA.from_string(task.prompt)
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
    return EvalSample(
        id=problem.id, question=problem.question, gold=problem.answer, completion=completion,
        steps=[s.to_dict() for s in steps], step_checks=[check_step(s.text).to_dict() for s in steps],
        target=reference, **grade(task, completion, reference),
    )


def summarize(records: Sequence[EvalRecord]) -> dict[str, Any]:
    """n, then per extractor: correct count, accuracy and its 95% Wilson interval."""
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kind in ("strict", "flexible"):
        k = sum(bool(getattr(r, f"correct_{kind}")) for r in records)
        lo, hi = wilson_interval(k, n)
        out[kind] = {"correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}
    out["mean_steps"] = sum(len(r.steps) for r in records) / n if n else 0.0
    return out


def judge_steps(judge, records: Sequence[EvalRecord], *, desc: str | None = None) -> None:
    """Score every step of every record with the judge (in context of the steps before it), in place."""
    from presrm.judge import StepToJudge

    items, owners = [], []
    for r in records:
        texts = [s["text"] for s in r.steps]
        r.step_scores = []
        for i, t in enumerate(texts):
            items.append(StepToJudge(r.question, tuple(texts[:i]), t))
            owners.append(r)
    for r, s in zip(owners, judge.score(items, desc=desc) if items else [], strict=True):
        r.step_scores.append(s)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from presrm import __version__

    return {"presrm": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def evaluate(model, tok, task: Task, problems: Sequence[Problem], *, max_new_tokens: int | None = None,
             batch_size: int = 16, judge=None, label: str = "eval",
             decoding=None) -> tuple[dict[str, Any], list[EvalSample]]:
    """Decode and grade every problem; with a judge, score each step of the shown solution.

    ``max_new_tokens`` defaults to the task's, else 320. ``decoding`` is a
    :class:`presrm.decoding.Decoding` (default greedy); best-of-N and beam
    search need ``judge``. Returns ``(summary, samples)``.
    """
    from presrm.decoding import Decoding, decode
    from presrm.models import hardware

    decoding = decoding or Decoding()
    max_new_tokens = max_new_tokens or task.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    t0 = time.time()
    shots = load_shots(task)
    records = decode(model, tok, task, problems, shots, decoding, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, judge=judge, label=label)
    if judge is not None and not decoding.scores_steps:
        judge_steps(judge, records, desc=f"{label}: judge steps")
    summary = summarize(records)
    protocol = {**task.protocol(), "shot_ids": [s.id for s in shots], "max_new_tokens": max_new_tokens,
                "decoding": decoding.to_dict(), "batch_size": batch_size,
                "dtype": str(getattr(model, "dtype", "")).removeprefix("torch.") or None,
                "device": str(getattr(model, "device", "")) or None,
                "hardware": hardware(getattr(model, "device", None), getattr(model, "dtype", None)),
                "example_prompt": build_prompt(tok, task, problems[0].question, shots) if problems else None}
    if judge is not None:
        protocol["judge"] = {"mode": getattr(judge, "mode", type(judge).__name__),
                             "aggregate": decoding.aggregate if decoding.scores_steps else None}
    summary.update({"protocol": protocol, "seconds": time.time() - t0, "versions": _versions(),
                    "schema_version": SCHEMA_VERSION})
    return summary, records


def samples_path(results: str | Path) -> Path:
    """The samples file next to a summary: ``results.json`` -> ``samples.jsonl``, ``X.json`` -> ``X_samples.jsonl``."""
    p = Path(results)
    return p.with_name("samples.jsonl" if p.name == "results.json" else f"{p.stem}_samples.jsonl")


def write_eval(out_dir: str | Path, summary: dict[str, Any], records: Sequence[EvalRecord], *,
               name: str = "results.json", samples: str = "samples.jsonl") -> None:
    """Write ``samples`` first, then the summary, so a present summary means a complete evaluation."""
    out = Path(out_dir)
    write_jsonl(out / samples, records)
    write_json(out / name, summary)
