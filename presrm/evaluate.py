"""GSM8K-style accuracy: greedy solutions, strict and flexible extraction, exact matching.

``evaluate`` returns a summary (accuracy with a 95% Wilson interval, the
protocol that produced it, wall time) and one ``EvalRecord`` per problem, so
the accuracy can be recomputed from ``samples.jsonl`` and the gold answers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from presrm.data import Task
from presrm.generate import generate, policy_prompt
from presrm.jsonio import write_json, write_jsonl
from presrm.schema import SCHEMA_VERSION, EvalRecord, Problem
from presrm.steps import segment
from presrm.verify import answers_match, check_step, extract_answer

log = logging.getLogger(__name__)


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


def score_record(problem: Problem, completion: str) -> EvalRecord:
    """Segment, verify and grade one completion against its gold answer."""
    steps = segment(completion)
    strict = extract_answer(completion, "strict")
    flexible = extract_answer(completion, "flexible")
    return EvalRecord(
        id=problem.id, question=problem.question, gold=problem.answer, completion=completion,
        steps=[s.to_dict() for s in steps], pred_strict=strict, pred_flexible=flexible,
        correct_strict=strict is not None and answers_match(strict, problem.answer),
        correct_flexible=flexible is not None and answers_match(flexible, problem.answer),
        step_checks=[check_step(s.text).to_dict() for s in steps],
    )


def summarize(records: Sequence[EvalRecord]) -> dict[str, Any]:
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kind in ("strict", "flexible"):
        k = sum(getattr(r, f"correct_{kind}") for r in records)
        lo, hi = wilson_interval(k, n)
        out[kind] = {"correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}
    out["mean_steps"] = sum(len(r.steps) for r in records) / n if n else 0.0
    return out


def evaluate(model, tok, task: Task, problems: Sequence[Problem], *, max_new_tokens: int = 320,
             batch_size: int = 16, judge=None, label: str = "eval") -> tuple[dict[str, Any], list[EvalRecord]]:
    """Greedy-decode every problem, grade it, and (with a judge) score each step."""
    t0 = time.time()
    prompts = [policy_prompt(tok, task, p.question) for p in problems]
    outs = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    stop=task.stop, desc=f"{label}: generate")
    records = [score_record(p, task.response_prefix + o[0]) for p, o in zip(problems, outs, strict=True)]
    if judge is not None:
        from presrm.judge import StepToJudge

        items, owners = [], []
        for r in records:
            texts = [s["text"] for s in r.steps]
            for i, t in enumerate(texts):
                items.append(StepToJudge(r.question, tuple(texts[:i]), t))
                owners.append(r)
        for r, s in zip(owners, judge.score(items, desc=f"{label}: judge steps"), strict=True):
            r.step_scores.append(s)
    summary = summarize(records)
    summary.update({"protocol": {**task.protocol(), "decoding": "greedy", "max_new_tokens": max_new_tokens,
                                 "extractors": ["strict", "flexible"]},
                    "seconds": time.time() - t0, "schema_version": SCHEMA_VERSION})
    return summary, records


def write_eval(out_dir: str | Path, summary: dict[str, Any], records: Sequence[EvalRecord], *,
               name: str = "results.json", samples: str = "samples.jsonl") -> None:
    """Write ``samples`` first, then the summary, so a present summary means a complete evaluation."""
    out = Path(out_dir)
    write_jsonl(out / samples, records)
    write_json(out / name, summary)
