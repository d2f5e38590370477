"""Synthetic run and eval directories for report tests: realistic shapes, made in the test, no model.

Iteration 0 is recorded the way the pointwise search writes it (``score`` per
candidate); iteration 1 the way a pairwise search does (``wins`` per candidate,
``matches`` per step, a rollback entry), so the report is tested on both.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from presrm.evaluate import wilson_interval
from presrm.verify import check_step


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _steps(a: int, b: int, wrong: bool) -> list[str]:
    total = a + b + (1 if wrong else 0)
    return [f"Step 1: She has {a} apples and buys {b} more.",
            f"Step 2: {a} + {b} = {total} apples in all.",
            f"Step 3: The answer is {total}."]


def eval_records(n: int, seed: int, p_right: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        wrong = rng.random() > p_right
        texts = _steps(a, b, wrong)
        completion = "\n".join(texts)
        spans, pos = [], 0
        for j, t in enumerate(texts):
            spans.append({"index": j, "text": t, "start": pos, "end": pos + len(t)})
            pos += len(t) + 1
        pred = str(a + b + (1 if wrong else 0))
        rows.append({
            "id": f"gsm8k-test-{i}", "question": f"Ann has {a} apples <and> buys {b} more. How many now?",
            "gold": str(a + b), "completion": completion, "steps": spans,
            "pred_strict": pred if i % 5 else None, "pred_flexible": pred,
            "correct_strict": bool(i % 5) and not wrong, "correct_flexible": not wrong,
            "step_scores": [round(rng.random(), 3) for _ in texts],
            "step_checks": [check_step(t).to_dict() for t in texts]})
    return rows


def _summary(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for kind in ("strict", "flexible"):
        k = sum(r[f"correct_{kind}"] for r in rows)
        out[kind] = {"correct": k, "accuracy": k / len(rows), "ci95": list(wilson_interval(k, len(rows)))}
    out["mean_steps"] = sum(len(r["steps"]) for r in rows) / len(rows)
    out["seconds"] = 12.5
    out["protocol"] = {"task": "gsm8k", "shots": 0, "decoding": "greedy", "stop": ["\n\n\n"],
                       "extractors": ["strict", "flexible"]}
    return {**out, **extra}


def _candidates(rng: random.Random, n: int, a: int, b: int, k: int, pairwise: bool) -> list[dict[str, Any]]:
    cands = []
    for j in range(k):
        off = 0 if j % 2 == 0 else j
        text = f"Step {n}: {a} + {b} = {a + b + off}" if n == 2 else f"Step {n}: We add <{a}> and {b} (try {j})."
        c: dict[str, Any] = {"text": text, "verdict": check_step(text).verdict}
        if pairwise:
            c["wins"] = 0.0
        else:
            c["score"] = round(rng.random(), 4)
        cands.append(c)
    return cands


def search_records(n: int, seed: int, pairwise: bool, k: int = 4) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        trace, steps, scores = [], [], []
        for step in (1, 2):
            cands = _candidates(rng, step, a, b, k, pairwise)
            entry: dict[str, Any] = {"step": step, "candidates": cands}
            if pairwise:
                matches = []
                for x in range(k):
                    for y in range(x + 1, k):
                        p_a = round(rng.random(), 3)
                        winner = "A" if p_a > 0.55 else "B" if p_a < 0.45 else "tie"
                        matches.append({"i": x, "j": y, "winner": winner, "p_a": p_a})
                        cands[x]["wins"] += 1.0 if winner == "A" else 0.5 if winner == "tie" else 0.0
                        cands[y]["wins"] += 1.0 if winner == "B" else 0.5 if winner == "tie" else 0.0
                entry["matches"] = matches
                key = [c["wins"] for c in cands]
            else:
                key = [c["score"] for c in cands]
            best, worst = key.index(max(key)), key.index(min(key))
            entry.update(chosen=best, rejected=worst, pair=i % 3 != 0, dropped=None if i % 3 else "score margin "
                         f"{rng.random() / 100:.4f} <= min_margin")
            trace.append(entry)
            if pairwise and step == 1 and i % 4 == 0:
                trace.append({"step": 1, "rollback": True, "reason": "all candidates tie", "candidates": []})
            steps.append(cands[best]["text"])
            scores.append(candidate_score(cands[best], k))
        rows.append({"id": f"gsm8k-train-{i}", "question": f"Bob has {a} pens and gets {b}. How many?",
                     "gold": str(a + b), "steps": steps, "step_scores": scores, "process_reward": min(scores),
                     "finished": i % 6 != 5, "pred": str(a + b) if i % 2 else "7", "correct": bool(i % 2),
                     "search": trace})
    return rows


def candidate_score(c: dict[str, Any], k: int) -> float:
    return c["score"] if "score" in c else c["wins"] / (k - 1)


def make_run_dir(root: Path, *, problems: int = 60, searched: int = 30, iterations: int = 2) -> Path:
    """A train run directory: config.yaml, M0 eval, then per iteration search, pairs, train and eval."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({
        "config": {"name": "synthetic", "model": "embedded", "seed": 0, "iterations": iterations,
                   "search": {"k": 4, "temperature": 0.7}, "judge": {"mode": "pointwise"}},
        "versions": {"python": "3.11.2", "presrm": "0.1.0", "torch": "2.13.0"}, "git": "0123abc", "seed": 0}))
    before = eval_records(problems, seed=100, p_right=0.2)
    _jsonl(root / "iter_0" / "eval_before_samples.jsonl", before)
    (root / "iter_0" / "eval_before.json").write_text(json.dumps(_summary(before, model="embedded")))
    for it in range(iterations):
        d = root / f"iter_{it}"
        recs = search_records(searched, seed=it, pairwise=it % 2 == 1)
        _jsonl(d / "samples.jsonl", recs)
        n_pairs = sum(e.get("pair", False) for r in recs for e in r["search"])
        _jsonl(d / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * n_pairs)
        (d / "search.json").write_text(json.dumps({"problems": searched, "pairs": n_pairs, "mean_steps": 2.0}))
        (d / "train.json").write_text(json.dumps({"optimizer_steps": 8, "first_loss": 0.6931, "last_loss": 0.61,
                                                  "lora_b_norm": 0.01, "log_history": [{"loss": 0.69}]}))
        after = eval_records(problems, seed=200 + it, p_right=0.25 + 0.05 * it)
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
