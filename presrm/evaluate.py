"""GSM8K-style accuracy under a recorded protocol: strict and flexible extraction, exact matching.

``evaluate`` decodes every problem (greedy, maj@k, best-of-N or judge-guided
step beam search; see :mod:`presrm.decoding`), grades each answer under the
task's extractors and matcher, and returns a summary (accuracy with a 95%
Wilson interval, the protocol that produced it, wall time) plus one
:class:`EvalSample` per problem. The accuracy is recomputable from
``samples.jsonl`` alone: each line holds the extracted answers, the reference
they were matched with, and the correctness under each extractor.

Beside accuracy, a process metric: the **step error rate**, the share of the
shown solutions' verifiable steps (those the verifier decided) whose arithmetic
is wrong, pooled over problems (sum wrong / sum verifiable), with a 95%
bootstrap interval over problems (:func:`presrm.grading.step_error_rate`), and the number of
steps whose verifier check ran out of time (``verifier_timeouts``). Both come
from per-problem counts in ``samples.jsonl`` too.

Two signs of a degenerate policy, each a count, a share and its Wilson interval:
``repeats``, the solutions that state one step twice word for word
(:func:`presrm.grading.repeats_a_step`), and ``no_answer``, those with no answer
in the required format (nothing for the strict extractor).

Every model call goes through an inference engine (:mod:`presrm.engines`, HF or
vLLM). The records and their grading live in :mod:`presrm.grading`, which
``decoding`` and this module both import (and which is re-exported here).

>>> from presrm.schema import Problem
>>> s = score_record(Problem(id="p", question="q", answer="7"), "Step 1: 3 + 4 = 7\\nThe answer is 7.")
>>> (s.pred_strict, s.correct_strict, s.correct_flexible)
('7', True, True)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from presrm.config import default_of
from presrm.data import Task, load_shots
from presrm.decoding import Decoding, decode
from presrm.grading import (
    EvalSample,
    build_prompt,
    grade,
    judge_agreement,
    judge_steps,
    record_field,
    record_step_counts,
    repeats_a_step,
    score_record,
    step_error_rate,
)
from presrm.jsonio import write_json, write_jsonl
from presrm.layout import RESULTS, samples_for
from presrm.schema import SCHEMA_VERSION, EvalRecord, Problem

log = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = default_of("eval.max_new_tokens")  # for a task that sets none
__all__ = ["DEFAULT_MAX_NEW_TOKENS", "EvalSample", "build_prompt", "evaluate", "grade", "judge_steps",
           "degeneration", "samples_path", "score_record", "step_error_rate", "summarize", "wilson_interval",
           "write_eval"]


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


def _share(k: int, n: int) -> dict[str, Any]:
    return {"count": k, "share": k / n if n else 0.0, "ci95": list(wilson_interval(k, n))}


def degeneration(records: Sequence[Any]) -> dict[str, Any]:
    """``repeats`` and ``no_answer`` of records (objects or samples.jsonl dicts): count, share, Wilson interval.

    >>> d = degeneration([{"steps": [{"text": "Step 1: 2 + 2 = 4"}, {"text": "Step 2: 2 + 2 = 4"}],
    ...                    "pred_strict": None}, {"steps": [], "pred_strict": "4"}])
    >>> d["repeats"]["count"], d["no_answer"]["share"]
    (1, 0.5)
    """
    n = len(records)
    return {"repeats": _share(sum(repeats_a_step(r) for r in records), n),
            "no_answer": _share(sum(record_field(r, "pred_strict") is None for r in records), n)}


def summarize(records: Sequence[EvalRecord]) -> dict[str, Any]:
    """n, then per extractor: correct count, accuracy and its 95% Wilson interval; the step error rate;
    ``repeats`` and ``no_answer`` (count, share, Wilson interval); ``judge_agreement``: the per-step scores'
    AUROC against the verifier's verdicts, with its interval (None when no judge scored the steps).

    ``step_errors`` (:func:`step_error_rate`) and ``verifier_timeouts`` (steps whose check ran
    out of time) are None when a record lacks its step counts (samples from before them).
    """
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kind in ("strict", "flexible"):
        k = sum(bool(getattr(r, f"correct_{kind}")) for r in records)
        lo, hi = wilson_interval(k, n)
        out[kind] = {"correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}
    out["mean_steps"] = sum(len(r.steps) for r in records) / n if n else 0.0
    out.update(degeneration(records))
    out["judge_agreement"] = judge_agreement(records)
    counts = [record_step_counts(r) for r in records]
    known = [c for c in counts if c is not None]
    if len(known) < n:
        out["step_errors"] = out["verifier_timeouts"] = None
    else:
        out["step_errors"] = step_error_rate([str(r.id) for r in records], [(w, v) for w, v, _ in known])
        out["verifier_timeouts"] = sum(t for _, _, t in known)
    return out


def evaluate(engine, task: Task, problems: Sequence[Problem], *, max_new_tokens: int | None = None,
             batch_size: int = 16, judge=None, label: str = "eval",
             decoding: Decoding | None = None) -> tuple[dict[str, Any], list[EvalSample]]:
    """Decode and grade every problem on ``engine``; with a judge, score each step of the shown solution.

    ``max_new_tokens`` defaults to the task's, else 320. ``decoding`` is a
    :class:`presrm.decoding.Decoding` (default greedy); best-of-N and beam
    search need ``judge``. Returns ``(summary, samples)``.
    """
    decoding = decoding or Decoding()
    max_new_tokens = max_new_tokens or task.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    t0 = time.time()
    shots = load_shots(task)
    records = decode(engine, task, problems, shots, decoding, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, judge=judge, label=label)
    if judge is not None and not decoding.scores_steps:
        judge_steps(judge, records, desc=f"{label}: judge steps")
    summary = summarize(records)
    protocol = {**task.protocol(), "shot_ids": [s.id for s in shots], "max_new_tokens": max_new_tokens,
                "decoding": decoding.to_dict(), "batch_size": batch_size, **engine.describe(),
                "example_prompt": build_prompt(engine.tok, task, problems[0].question, shots) if problems else None}
    if judge is not None:
        protocol["judge"] = {"mode": judge.mode,
                             "aggregate": decoding.aggregate if decoding.scores_steps else None}
    from presrm.models import versions

    summary.update({"protocol": protocol, "seconds": time.time() - t0, "versions": versions(),
                    "schema_version": SCHEMA_VERSION})
    return summary, records


def samples_path(results: str | Path) -> Path:
    """The samples file next to a summary: ``results.json`` -> ``samples.jsonl``, ``X.json`` -> ``X_samples.jsonl``
    (:func:`presrm.layout.samples_for`)."""
    return samples_for(Path(results))


def write_eval(out_dir: str | Path, summary: dict[str, Any], records: Sequence[EvalRecord], *,
               name: str = RESULTS) -> None:
    """Write the samples first, then the summary ``name``, so a present summary means a complete evaluation."""
    summary_file = Path(out_dir) / name
    write_jsonl(samples_for(summary_file), records)
    write_json(summary_file, summary)
