"""Running a judge on a labelled set: per-unit runners (step, pair, solution) and the natural set.

:func:`evaluate_judge` runs any judge of :mod:`presrm.judge` on a synthetic or ProcessBench-format set
(:mod:`presrm.labelled`); what it measures follows the judge's ``unit``. :func:`evaluate_natural` judges the
model's own verifier-labelled steps, with bootstrap intervals over problems.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from presrm.errors import ConfigError
from presrm.judge_eval.metrics import (
    _auroc_of,
    _mean_of,
    _ratio,
    auroc,
    first_error,
    pairwise_accuracy,
    position_bias,
    processbench,
)
from presrm.labelled import LabelledSet, LabelledSolution, NaturalSet, right_wrong_couples
from presrm.stats import bootstrap_ci


def _step_item(question: str, steps: Sequence[str], k: int, step: str | None = None):
    from presrm.judge import StepToJudge

    return StepToJudge(question, tuple(steps[:k]), steps[k] if step is None else step)


def _outcome(better: float, worse: float) -> float:
    return 1.0 if better > worse else 0.0 if better < worse else 0.5


def _eval_pointwise(judge, solutions: Sequence[LabelledSolution], threshold: float):
    """Per-step scores for every solution: ProcessBench F1, step AUROC, pairwise accuracy from scores."""
    index: dict[Any, int] = {}
    labels: dict[Any, bool] = {}  # judged steps whose correctness is known
    for sol in solutions:
        for k in range(len(sol.steps)):
            item = _step_item(sol.question, sol.steps, k)
            index.setdefault(item, len(index))
            if k <= sol.first_error or not sol.flawed:
                labels[item] = k != sol.first_error
        if sol.flawed and sol.original_step is not None:  # its correct twin, for the pairwise comparison
            twin = _step_item(sol.question, sol.steps, sol.first_error, sol.original_step)
            index.setdefault(twin, len(index))
            labels[twin] = True
    items = list(index)
    start = time.perf_counter()
    scores = judge.score(items, desc="judge-eval")
    seconds = time.perf_counter() - start
    samples, predicted, outcomes = [], [], []
    for sol in solutions:
        step_scores = [scores[index[_step_item(sol.question, sol.steps, k)]] for k in range(len(sol.steps))]
        pred = first_error(step_scores, threshold)
        predicted.append(pred)
        rec = {"id": sol.id, "first_error": sol.first_error, "predicted_first_error": pred,
               "step_scores": step_scores, "process_reward_min": min(step_scores)}
        if sol.flawed and sol.original_step is not None:
            twin = scores[index[_step_item(sol.question, sol.steps, sol.first_error, sol.original_step)]]
            outcomes.append(_outcome(twin, step_scores[sol.first_error]))
            rec.update(correct_twin_score=twin, pairwise_outcome=outcomes[-1])
        samples.append(rec)
    known = [(scores[index[it]], ok) for it, ok in labels.items()]
    gold = [s.first_error for s in solutions]
    right, wrong = [s for s, ok in known if ok], [s for s, ok in known if not ok]
    metrics = {
        "processbench": processbench(predicted, gold),
        "processbench_best_threshold": _best_threshold([r["step_scores"] for r in samples], gold),
        "step_auroc": {"value": auroc([s for s, _ in known], [ok for _, ok in known]),
                       "n_correct": len(right), "n_incorrect": len(wrong),
                       "mean_score_correct": _ratio(sum(right), len(right)),
                       "mean_score_incorrect": _ratio(sum(wrong), len(wrong))},
        "pairwise": pairwise_accuracy(outcomes),
        "solution_auroc": _solution_auroc([r["process_reward_min"] for r in samples], solutions,
                                          "min over step scores"),
    }
    return metrics, samples, _speed("step", len(items), len(items), seconds)


def _best_threshold(step_scores: Sequence[Sequence[float]], gold: Sequence[int]) -> dict[str, Any]:
    """ProcessBench F1 at the threshold that maximises it on this very set: an optimistic bound
    that shows how much of a low F1 is calibration (where the threshold sits) rather than ranking."""
    candidates = sorted({s for scores in step_scores for s in scores} | {1.0})
    best = max(((processbench([first_error(sc, t) for sc in step_scores], gold), t) for t in candidates),
               key=lambda r: (r[0]["f1"] or 0.0, -abs(r[1] - 0.5)))
    return {**best[0], "threshold": best[1], "note": "threshold chosen on the evaluation set itself (optimistic)"}


def _eval_pairwise(judge, solutions: Sequence[LabelledSolution], seed: int):
    """Each perturbed step against its correct twin; the correct step's side (A/B) is seeded per item."""
    from presrm.judge import PairToJudge

    flawed = [s for s in solutions if s.flawed and s.original_step is not None]
    pairs, sides = [], []
    for sol in flawed:
        correct, wrong = sol.original_step, sol.steps[sol.first_error]
        side = random.Random(f"{seed}:{sol.id}:side").choice("AB")
        a, b = (correct, wrong) if side == "A" else (wrong, correct)
        pairs.append(PairToJudge(sol.question, tuple(sol.steps[: sol.first_error]), a, b))
        sides.append(side)
    start = time.perf_counter()
    verdicts = judge.compare(pairs, desc="judge-eval")
    seconds = time.perf_counter() - start
    samples, outcomes = [], []
    for sol, pair, side, v in zip(flawed, pairs, sides, verdicts, strict=True):
        outcome = None if v.winner is None else 0.5 if v.winner == "tie" else float(v.winner == side)
        p_correct = None if v.p_a is None else (v.p_a if side == "A" else 1.0 - v.p_a)
        outcomes.append(outcome)
        samples.append({"id": sol.id, "step": sol.first_error, "a": pair.a, "b": pair.b, "correct_is": side,
                        "winner": v.winner, "p_a": v.p_a, "p_correct": p_correct, "outcome": outcome,
                        "orders": v.orders, "raw": v.raw})
    reason = f"a {judge.mode} judge compares two steps and gives no per-step score"
    metrics = {
        "processbench": {"f1": None, "reason": reason},
        "step_auroc": {"value": None, "reason": reason},
        "pairwise": {**pairwise_accuracy(outcomes),
                     # The averaged p(correct step better) read without the tie margin: a weak signal shows here.
                     "accuracy_no_margin": pairwise_accuracy(
                         [None if r["p_correct"] is None else _outcome(r["p_correct"], 0.5) for r in samples]
                     )["accuracy"],
                     "first_shown_wins": position_bias([o for r in samples for o in r["orders"]])},
        "solution_auroc": {"value": None, "reason": reason},
    }
    prompts = len(pairs) * (2 if getattr(judge, "both_orders", True) else 1)
    return metrics, samples, _speed("pair", len(pairs), 2 * len(pairs), seconds, prompts=prompts)


def _eval_outcome(judge, solutions: Sequence[LabelledSolution]):
    """One rubric score per whole solution: how well it separates correct from flawed solutions."""
    start = time.perf_counter()
    scores = judge.score_solutions([s.question for s in solutions], ["\n".join(s.steps) for s in solutions],
                                   desc="judge-eval")
    seconds = time.perf_counter() - start
    raws = [v.raw for v in getattr(judge, "last_verdicts", [])] or [None] * len(scores)
    samples = [{"id": s.id, "first_error": s.first_error, "score": score, "raw": raw}
               for s, score, raw in zip(solutions, scores, raws, strict=True)]
    reason = "an outcome judge scores whole solutions, not steps"
    auc = _solution_auroc(scores, solutions, "outcome rubric score (points / 5)")
    metrics = {
        "processbench": {"f1": None, "reason": reason},
        "step_auroc": {"value": None, "reason": reason},
        "pairwise": {"accuracy": None, "reason": reason},
        "solution_auroc": auc,
    }
    steps = sum(len(s.steps) for s in solutions)
    return metrics, samples, _speed("solution", len(solutions), steps, seconds)


def _solution_auroc(scores: Sequence[float | None], solutions: Sequence[LabelledSolution], what: str):
    """AUROC of correct (positive) vs flawed solutions; unparseable (None) scores are left out."""
    known = [(s, not sol.flawed) for s, sol in zip(scores, solutions, strict=True) if s is not None]
    return {"value": auroc([s for s, _ in known], [y for _, y in known]), "score": what,
            "n_correct": sum(y for _, y in known), "n_flawed": sum(not y for _, y in known),
            "unparseable": len(scores) - len(known)}


def _speed(unit: str, judged: int, steps: int, seconds: float, *, prompts: int | None = None) -> dict[str, Any]:
    """Throughput of the judge calls alone (no model loading, no set building)."""
    return {"unit": unit, "judged": judged, "prompts": judged if prompts is None else prompts, "steps": steps,
            "seconds": seconds, "per_s": judged / seconds if seconds > 0 else None,
            "steps_per_s": steps / seconds if seconds > 0 else None}


def evaluate_judge(judge, labelled: LabelledSet, *, threshold: float = 0.5,
                   seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``judge`` on the labelled set; returns the metrics and one record per judged item.

    What is measured follows the judge's ``unit``: "step" (per-step scores, pointwise),
    "pair" (pairwise or generative verdicts), "solution" (outcome scores).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    sols = labelled.solutions
    unit = getattr(judge, "unit", None)
    if unit == "step":
        metrics, samples, speed = _eval_pointwise(judge, sols, threshold)
    elif unit == "pair":
        metrics, samples, speed = _eval_pairwise(judge, sols, seed)
    elif unit == "solution":
        metrics, samples, speed = _eval_outcome(judge, sols)
    else:
        raise ConfigError(f"judge {type(judge).__name__} judges {unit!r} items, not step, pair or solution")
    n_flawed = sum(s.flawed for s in sols)
    metrics["n"] = {"problems": labelled.stats.get("problems", 0), "solutions": len(sols),
                    "correct_solutions": len(sols) - n_flawed, "flawed_solutions": n_flawed}
    metrics["speed"] = speed
    by_id = {s.id: s for s in sols}
    for rec in samples:
        sol = by_id[rec["id"]]
        rec.update(problem_id=sol.problem_id, question=sol.question, steps=list(sol.steps),
                   perturbation=sol.perturbation)
    return metrics, samples


def evaluate_natural(judge, nat: NaturalSet, *, seed: int = 0, per_group: int = 4,
                     resamples: int = 1000) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The judge on the model's own steps: step AUROC and right-vs-wrong pairwise accuracy, with 95% CIs.

    A pointwise judge scores every step (unverifiable ones too, reported as their own class);
    the AUROC ranks verifiably right above verifiably wrong steps, and the pairwise accuracy
    compares a right and a wrong candidate sampled after the same prefix by their scores. A
    pairwise judge compares those couples directly (the right step's side seeded per couple).
    """
    from presrm.judge import PairToJudge, StepToJudge

    couples = right_wrong_couples(nat.steps, per_group=per_group, seed=seed)
    samples: list[dict[str, Any]] = []
    start = time.perf_counter()
    if judge.unit == "step":
        items = [StepToJudge(s.question, s.previous, s.step) for s in nat.steps]
        scores = judge.score(items, desc="judge-eval natural")
        score_of = {s.id: sc for s, sc in zip(nat.steps, scores, strict=True)}
        known = [(s.problem_id, (score_of[s.id], s.label == "correct")) for s in nat.steps if s.label != "unverifiable"]
        outcomes = [(r.problem_id, _outcome(score_of[r.id], score_of[w.id])) for r, w in couples]
        samples = [{**s.to_dict(), "score": score_of[s.id]} for s in nat.steps]
        by_class = {v: _mean_of([score_of[s.id] for s in nat.steps if s.label == v])
                    for v in ("correct", "incorrect", "unverifiable")}
        auc = {"value": _auroc_of([k for _, k in known]),
               "ci95": bootstrap_ci([c for c, _ in known], [k for _, k in known], _auroc_of,
                                    resamples=resamples, seed=seed),
               "n_correct": sum(y for _, (_, y) in known), "n_incorrect": sum(not y for _, (_, y) in known),
               "mean_score": by_class}
        judged, unit = len(items), "step"
    elif judge.unit == "pair":
        sides = [random.Random(f"{seed}:{r.id}:{w.id}").choice("AB") for r, w in couples]
        pairs = [PairToJudge(r.question, r.previous, *((r.step, w.step) if side == "A" else (w.step, r.step)))
                 for (r, w), side in zip(couples, sides, strict=True)]
        verdicts = judge.compare(pairs, desc="judge-eval natural")
        outcomes = []
        for (r, w), side, v in zip(couples, sides, verdicts, strict=True):
            o = None if v.winner is None else 0.5 if v.winner == "tie" else float(v.winner == side)
            outcomes.append((r.problem_id, o))
            samples.append({"group": r.group, "right": r.step, "wrong": w.step, "right_is": side,
                            "winner": v.winner, "p_a": v.p_a, "outcome": o})
        auc = {"value": None, "reason": f"a {judge.mode} judge compares two steps and gives no per-step score"}
        judged, unit = len(pairs), "pair"
    else:
        raise ConfigError(f"the natural set needs a step judge (pointwise or pairwise), not {type(judge).__name__}")
    seconds = time.perf_counter() - start

    def acc(xs: list[float | None]) -> float | None:
        return pairwise_accuracy(xs)["accuracy"] if xs else None

    pw = {**pairwise_accuracy([o for _, o in outcomes]),
          "ci95": bootstrap_ci([c for c, _ in outcomes], [o for _, o in outcomes], acc, resamples=resamples,
                               seed=seed),
          "groups": len({r.group for r, _ in couples}), "per_group_cap": per_group}
    metrics = {"step_auroc": auc, "pairwise": pw, "set": nat.meta,
               "speed": _speed(unit, judged, judged, seconds)}
    return metrics, samples
