"""Synthetic run and eval directories for report tests, made in the test without a model.

Records come from the real pipeline code, so the report is tested on the shapes
the pipeline writes today: ``presrm.search.step_search`` runs with a scripted
sampler and a deterministic fake judge (pointwise in iteration 0, pairwise
tournaments with ties and rollbacks in iteration 1), and evaluation records are
graded by ``presrm.evaluate.score_record`` (some carry maj@k votes, some
best-of-N candidates, some beam-search rounds).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from presrm.config import SearchConfig
from presrm.data import load_task
from presrm.evaluate import score_record, summarize
from presrm.judge import Tournament
from presrm.judges.common import ScoreJudgeBase
from presrm.schema import Problem
from presrm.search import search_stats, step_search


def _u(*key: Any) -> float:
    """A deterministic number in [0, 1) from a key: the fixtures' only randomness."""
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16) / 2**32


def _numbers(seed: int, i: int) -> tuple[int, int]:
    return 2 + int(38 * _u(seed, i, "a")), 2 + int(38 * _u(seed, i, "b"))


def _problem(kind: str, seed: int, i: int) -> Problem:
    a, b = _numbers(seed, i)
    q = f"Ann has {a} apples <and> buys {b} more. How many now?"
    return Problem(id=f"gsm8k-{kind}-{i}", question=q, answer=str(a + b))


def _sampler(k: int):
    """Candidate continuations of ``... Step n:``: arithmetic at step 2 (some wrong), an answer at step 3."""
    def sample(prompts: Sequence[str], seed: int) -> list[list[str]]:
        out = []
        for p in prompts:
            a, b = (int(x) for x in re.findall(r"Ann has (\d+) apples <and> buys (\d+)", p)[-1])
            n = int(re.findall(r"Step (\d+):$", p)[-1])
            cands = []
            for j in range(k):
                off = 0 if _u(seed, p, j) < 0.6 else 1 + j
                if n == 1:
                    cands.append(f" She starts with {a} apples and buys {b} (way {j % 2}).")
                elif n == 2:
                    cands.append(f" {a} + {b} = {a + b + off} apples.")
                else:
                    cands.append(f" The answer is {a + b + (j % 2)}.")
            out.append(cands)
        return out
    return sample


class PointwiseFake(ScoreJudgeBase):
    """Scores a step with a deterministic pseudo-probability (tournaments: the ranking of every score judge)."""

    mode = "pointwise"

    def score(self, items, *, desc=None) -> list[float]:
        return [round(_u(it.step, len(it.previous)), 4) for it in items]


class PairwiseFake:
    """Round robins with deterministic P(A better); a few groups tie throughout (the search rolls back)."""

    mode = "pairwise"

    def tournaments(self, groups, *, desc=None) -> list[Tournament]:
        out = []
        for q, prev, cands in groups:
            all_tie = _u(q, prev, tuple(cands), "tie") < 0.15
            wins = [0.0] * len(cands)
            matches = []
            for i in range(len(cands)):
                for j in range(i + 1, len(cands)):
                    p_a = 0.5 if all_tie else round(_u(cands[i], cands[j]), 3)
                    winner = "A" if p_a > 0.55 else "B" if p_a < 0.45 else "tie"
                    wins[i] += 1.0 if winner == "A" else 0.5 if winner == "tie" else 0.0
                    wins[j] += 1.0 if winner == "B" else 0.5 if winner == "tie" else 0.0
                    matches.append({"i": i, "j": j, "winner": winner, "p_a": p_a})
            out.append(Tournament(wins=wins, matches=matches, scores=[w / (len(cands) - 1) for w in wins]))
        return out


def search_run(n: int, seed: int, pairwise: bool, k: int = 4, max_steps: int = 6):
    """``(records, pairs)`` of the real step search over ``n`` synthetic problems."""
    task = load_task("gsm8k_train")
    cfg = SearchConfig(k=k, max_steps=max_steps)
    problems = [_problem("train", seed, i) for i in range(n)]
    judge = PairwiseFake() if pairwise else PointwiseFake()
    no_model = SimpleNamespace(tok=None)  # no chat template (plain prompts); the script samples, not an engine
    return step_search(no_model, judge, task, problems, cfg, seed=seed, iteration=seed, sampler=_sampler(k))


def _completion(a: int, b: int, wrong: bool, steps: int) -> str:
    total = a + b + (1 if wrong else 0)
    lines = [f"Step 1: She has {a} apples and buys {b} more.", f"Step 2: {a} + {b} = {total} apples in all."]
    lines += [f"Step {i}: Then {i} * 3 = {3 * i}, which we do not need." for i in range(3, steps)]
    return "\n".join([*lines, f"Step {steps}: The answer is {total}."])


def eval_records(n: int, seed: int, p_right: float, steps: int = 3) -> list[dict[str, Any]]:
    """Graded solutions; every 7th carries maj@k votes, every 11th best-of-N candidates, every 13th beam rounds."""
    task = load_task("gsm8k")
    rows = []
    for i in range(n):
        a, b = _numbers(seed, i)
        wrong = _u(seed, i, "wrong") > p_right
        rec = score_record(_problem("test", seed, i), _completion(a, b, wrong, steps), task)
        rec.step_scores = [round(_u(seed, i, j), 3) for j in range(len(rec.steps))]
        alt = score_record(_problem("test", seed, i), _completion(a, b, not wrong, steps), task)
        if i % 7 == 3:
            rec.candidates = [{"completion": r.completion, "pred_strict": r.pred_strict,
                               "pred_flexible": r.pred_flexible, "correct_strict": r.correct_strict,
                               "correct_flexible": r.correct_flexible} for r in (rec, alt, rec)]
            rec.chosen = 0
            rec.votes = {name: [{"answer": getattr(rec, f"pred_{name}"), "count": 2},
                                {"answer": getattr(alt, f"pred_{name}"), "count": 1}]
                         for name in ("strict", "flexible")}
        elif i % 11 == 5:
            rec.candidates = [{"completion": r.completion, "pred_strict": r.pred_strict,
                               "pred_flexible": r.pred_flexible, "correct_strict": r.correct_strict,
                               "correct_flexible": r.correct_flexible, "step_scores": rec.step_scores,
                               "process_reward": pr} for r, pr in ((rec, 0.61), (alt, 0.42))]
            rec.chosen, rec.process_reward = 0, 0.61
        elif i % 13 == 6:
            rec.search = [{"step": 1, "candidates": [
                {"beam": 0, "text": s.get("text", ""), "score": 0.5, "process_reward": 0.5, "kept": j == 0}
                for j, s in enumerate(rec.steps[:2])]}]
        rows.append(rec.to_dict())
    return rows


def _jsonl(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_dict() if hasattr(r, "to_dict") else r) + "\n" for r in rows),
                    encoding="utf-8")


def _summary(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    class _R:  # summarize reads attributes
        def __init__(self, d: dict[str, Any]) -> None:
            self.__dict__.update(d)

    out = summarize([_R(r) for r in rows])
    out.update(seconds=12.5, protocol={"task": "gsm8k", "shots": 0, "decoding": {"mode": "greedy"},
                                       "stop": ["\n\n\n"], "extractors": ["strict", "flexible"]})
    return {**out, **extra}


def make_run_dir(root: Path, *, problems: int = 60, searched: int = 30, iterations: int = 2,
                 init: bool = False, eval_steps: int = 3, k: int = 4, max_steps: int = 6) -> Path:
    """A train run directory: config.yaml, M0 eval, then per iteration search, pairs, train and eval."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({
        "config": {"name": "synthetic", "model": "embedded", "seed": 0, "iterations": iterations,
                   "search": {"k": 4, "temperature": 0.7}, "judge": {"mode": "pairwise"}},
        "versions": {"python": "3.11.2", "presrm": "0.1.0", "torch": "2.13.0"}, "git": "0123abc", "seed": 0}))
    before = eval_records(problems, seed=100, p_right=0.2, steps=eval_steps)
    _jsonl(root / "iter_0" / "eval_before_samples.jsonl", before)
    (root / "iter_0" / "eval_before.json").write_text(json.dumps(_summary(before, model="embedded")))
    if init:
        _jsonl(root / "init" / "ift.jsonl", [{"prompt": "p", "completion": "c"}] * 5)
        (root / "init" / "train.json").write_text(json.dumps({"optimizer_steps": 3, "first_loss": 1.9,
                                                                 "last_loss": 1.2}))
        rows = eval_records(problems, seed=150, p_right=0.3, steps=eval_steps)
        _jsonl(root / "init" / "eval_samples.jsonl", rows)
        (root / "init" / "eval.json").write_text(json.dumps(_summary(rows, model=str(root / "init" / "model"))))
    for it in range(iterations):
        d = root / f"iter_{it}"
        recs, pairs = search_run(searched, seed=it, pairwise=it % 2 == 1, k=k, max_steps=max_steps)
        _jsonl(d / "samples.jsonl", recs)
        _jsonl(d / "pairs.jsonl", pairs)
        (d / "search.json").write_text(json.dumps(search_stats(recs, pairs)))
        (d / "train.json").write_text(json.dumps({"optimizer_steps": 8, "first_loss": 0.6931, "last_loss": 0.61,
                                                  "lora_b_norm": 0.01, "log_history": [{"loss": 0.69}]}))
        after = eval_records(problems, seed=200 + it, p_right=0.25 + 0.05 * it, steps=eval_steps)
        _jsonl(d / "eval_samples.jsonl", after)
        (d / "eval.json").write_text(json.dumps(_summary(after, model=str(d / "model"))))
    return root


def make_eval_dir(root: Path, *, problems: int = 40) -> Path:
    """A ``presrm eval`` output directory: results.json + samples.jsonl."""
    rows = eval_records(problems, seed=7, p_right=0.3)
    _jsonl(root / "samples.jsonl", rows)
    (root / "results.json").write_text(json.dumps(_summary(
        rows, model="embedded", adapter=None, versions={"presrm": "0.1.0", "torch": "2.13.0"}, git="0123abc")))
    return root
