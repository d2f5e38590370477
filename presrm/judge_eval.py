"""How good is the self-judge? Measured against steps whose correctness is known.

Three labelled sets (built in :mod:`presrm.labelled`):

* **synthetic** (default): GSM8K gold solutions in ``Step n:`` form and a copy
  with one arithmetic result perturbed, every label confirmed by the verifier.
  Built like the EFT data, so it flatters an EFT-trained judge.
* **natural** (``--natural FILE``): the model's own candidate steps after its own
  prefixes on GSM8K *test* problems, labelled by the verifier; built once per
  generating model, then reused for every model judged (M0, M1, ...). Reported
  beside the synthetic set: step AUROC and right-vs-wrong pairwise accuracy at
  the same prefix, each with a 95% bootstrap interval over problems.
* **any ProcessBench-format file** (``--labelled FILE``), to compare with published PRMs.

Metrics (pure functions, each with a table-driven test):

* :func:`processbench` -- ProcessBench F1: the harmonic mean of exact
  first-error accuracy on flawed solutions and "no error" accuracy on correct ones;
* :func:`auroc` -- ranking quality with ties counted half (Mann-Whitney);
* :func:`pairwise_accuracy` -- a correct step vs its perturbed twin; ties and
  unparseable verdicts count 0.5;
* :func:`bootstrap_ci` (from :mod:`presrm.stats`) -- a percentile interval, resampling whole problems.

:func:`evaluate_judge` runs any judge of :mod:`presrm.judge` (pointwise,
pairwise, generative, outcome) on the set; :func:`run_judge_eval` is the
``presrm judge-eval`` command.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from presrm.errors import ConfigError
from presrm.jsonio import write_json, write_jsonl
from presrm.labelled import (
    LabelledSet,
    LabelledSolution,
    NaturalSet,
    build_labelled_set,
    right_wrong_couples,
    synthetic_protocol,
)
from presrm.stats import bootstrap_ci

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODES = ("pointwise", "pairwise", "generative", "outcome", "likelihood", "random")
JUDGE_OPTIONS = ("batch_size", "both_orders", "tie_margin", "max_new_tokens", "prefix_cache")
"""Judge attributes recorded in the protocol when the judge has them."""


# --------------------------------------------------------------------------- metrics


def first_error(scores: Sequence[float], threshold: float = 0.5) -> int:
    """The predicted first error: the first step scored below ``threshold``, else -1.

    >>> first_error([0.9, 0.4, 0.2]), first_error([0.9, 0.8]), first_error([0.5], 0.5)
    (1, -1, -1)
    """
    return next((k for k, s in enumerate(scores) if s < threshold), -1)


def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def processbench(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, Any]:
    """ProcessBench F1 of predicted vs gold first-error indices (-1 = no error).

    ``acc_flawed``: exact first-error hits among flawed solutions; ``acc_correct``:
    -1 predicted among correct ones; ``f1``: their harmonic mean (0 when both are 0,
    None when either group is empty).

    >>> processbench([2, -1, -1, 0], [2, 1, -1, -1])["f1"]
    0.5
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} labels")
    flawed = [(p, g) for p, g in zip(predicted, gold, strict=True) if g >= 0]
    correct = [p for p, g in zip(predicted, gold, strict=True) if g < 0]
    a = _ratio(sum(p == g for p, g in flawed), len(flawed))
    b = _ratio(sum(p < 0 for p in correct), len(correct))
    f1 = None if a is None or b is None else (2 * a * b / (a + b) if a + b else 0.0)
    return {"f1": f1, "acc_flawed": a, "acc_correct": b, "n_flawed": len(flawed), "n_correct": len(correct)}


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half).

    Computed from average ranks (the Mann-Whitney U statistic). None when a class is empty.

    >>> auroc([0.9, 0.8, 0.3], [True, False, False]), auroc([0.5, 0.5], [True, False])
    (1.0, 0.5)
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1  # average 1-based rank of the tie group
        i = j + 1
    pos_ranks = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (pos_ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def pairwise_accuracy(outcomes: Sequence[float | None]) -> dict[str, Any]:
    """Share of comparisons won by the correct step: 1 a win, 0 a loss, 0.5 a tie, None unparseable.

    Unparseable verdicts count 0.5 (no preference) in ``accuracy``; ``accuracy_parsed``
    leaves them out.

    >>> pairwise_accuracy([1, 0, 0.5, None])["accuracy"]
    0.5
    """
    bad = [o for o in outcomes if o not in (0, 0.5, 1, None)]
    if bad:
        raise ValueError(f"pairwise outcomes must be 0, 0.5, 1 or None, got {bad[0]!r}")
    parsed = [o for o in outcomes if o is not None]
    n = len(outcomes)
    return {
        "accuracy": _ratio(sum(parsed) + 0.5 * (n - len(parsed)), n),
        "accuracy_parsed": _ratio(sum(parsed), len(parsed)),
        "tie_rate": _ratio(sum(1 for o in parsed if o == 0.5), n),
        "unparseable_rate": _ratio(n - len(parsed), n),
        "n": n,
    }


def position_bias(orders: Sequence[dict[str, Any]]) -> float | None:
    """Share of single-order verdicts that pick the step shown first (0.5: no position bias).

    Each entry is ``{"order": "AB"|"BA", "verdict": "A"|"B"|None}`` with the verdict naming the
    pair's A, as in ``PairVerdict.orders``; unparseable (None) verdicts are left out.

    >>> position_bias([{"order": "AB", "verdict": "A"}, {"order": "BA", "verdict": "B"},
    ...                {"order": "BA", "verdict": "A"}, {"order": "AB", "verdict": None}])
    0.6666666666666666
    """
    decided = [o for o in orders if o.get("verdict") in ("A", "B")]
    return _ratio(sum(o["verdict"] == o["order"][0] for o in decided), len(decided))


def _auroc_of(pairs: list[tuple[float, bool]]) -> float | None:
    return auroc([s for s, _ in pairs], [y for _, y in pairs])


def _mean_of(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


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


# --------------------------------------------------------------------------- running a judge


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


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class JudgeEvalArgs:
    """Options of ``presrm judge-eval`` (see ``presrm judge-eval --help``)."""

    model: str = "embedded"
    mode: str = "pointwise"
    limit: int = 50
    output_dir: str = "judge-eval"
    adapter: str | None = None
    threshold: float = 0.5
    seed: int = 0
    task: str = "gsm8k"
    tasks_dir: str | None = None
    data_file: str | None = None
    template: str | None = None
    batch_size: int | None = None
    max_new_tokens: int | None = None
    device: str = "auto"
    precision: str = "auto"
    labelled: str | None = None
    natural: str | None = None
    natural_model: str | None = None
    natural_k: int = 4
    natural_max_steps: int = 8
    natural_temperature: float = 0.7
    engine: str = "hf"
    vllm: Any = None  # a presrm.config.VLLMConfig (engine vllm); None: its defaults

    def validate(self) -> None:
        checks = [
            (self.mode in MODES, f"--judge must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.engine in ("hf", "vllm"), f"--engine must be hf or vllm, got {self.engine!r}"),
            (self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
            (0.0 <= self.threshold <= 1.0 and not math.isnan(self.threshold),
             f"--threshold must be in [0, 1], got {self.threshold}"),
            (self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16: {self.precision!r}"),
            *[(v is None or v >= 1, f"{flag} must be at least 1, got {v}") for flag, v in self.judge_options().items()],
            (not Path(self.output_dir).is_file(), f"--output-dir {self.output_dir} is a file, not a folder"),
            (self.template is None or Path(self.template).is_file(), f"--template {self.template} does not exist"),
            (self.adapter is None or Path(self.adapter).is_dir(), f"--adapter {self.adapter} is not a folder"),
            (self.labelled is None or Path(self.labelled).is_file(), f"--labelled {self.labelled} is not a file"),
            (self.natural is None or not Path(self.natural).is_dir(), f"--natural {self.natural} is a folder, "
             "not a JSONL file"),
            (self.natural_k >= 2, f"--natural-k must be at least 2, got {self.natural_k}"),
            (self.natural_max_steps >= 1, f"--natural-max-steps must be at least 1, got {self.natural_max_steps}"),
            (0.0 < self.natural_temperature <= 2.0, f"--natural-temperature must be in (0, 2], got "
             f"{self.natural_temperature}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def command(self) -> str:
        """The ``presrm judge-eval`` command line that reproduces this run."""
        parts = ["presrm judge-eval", f"--model {self.model}", f"--judge {self.mode}", f"--limit {self.limit}",
                 f"--output-dir {self.output_dir}", f"--threshold {self.threshold}", f"--seed {self.seed}"]
        optional = {"--precision": None if self.precision == "auto" else self.precision, "--adapter": self.adapter,
                    "--engine": None if self.engine == "hf" else self.engine,
                    "--task": self.task if self.task != "gsm8k" else None,
                    "--tasks-dir": self.tasks_dir, "--data-file": self.data_file, "--template": self.template,
                    "--labelled": self.labelled, "--natural": self.natural, "--natural-model": self.natural_model,
                    **self.judge_options()}
        return " ".join(parts + [f"{flag} {value}" for flag, value in optional.items() if value is not None])

    def judge_options(self) -> dict[str, Any]:
        """The options given to the judge's constructor, as ``--flag: value``; unset ones keep its defaults."""
        generates = self.mode in ("generative", "outcome")
        return {"--batch-size": self.batch_size, "--max-new-tokens": self.max_new_tokens if generates else None}

    def judge_kwargs(self) -> dict[str, Any]:
        """``judge_options`` as the judge constructor's keyword arguments."""
        return {flag[2:].replace("-", "_"): v for flag, v in self.judge_options().items() if v is not None}

    def engine_options(self, *, adapter: bool = True):
        """How to load the judged model (``adapter``: with ``--adapter`` applied)."""
        from presrm.engine import EngineOptions

        return EngineOptions(name=self.engine, device=self.device, precision=self.precision, seed=self.seed,
                             adapter=self.adapter if adapter else None, vllm=self.vllm)


def natural_set_for(args: JudgeEvalArgs, task, engine=None) -> NaturalSet:
    """The natural set at ``args.natural``: read it when it exists, else build it and save it there.

    It is built from ``args.limit`` problems of ``args.task`` by ``args.natural_model`` (default
    ``args.model``) on ``engine`` when given (it must hold that model), else on an engine of its own,
    closed afterwards; the build record beside it names that model.
    """
    from presrm.labelled import build_natural_set, read_natural_set, write_natural_set

    path = Path(args.natural)
    if path.exists():
        nat = read_natural_set(path)
        log.info("Natural set %s: %d steps from %s", path, len(nat.steps), nat.meta.get("generator"))
        return nat
    from presrm.config import SearchConfig
    from presrm.data import load_problems
    from presrm.engine import open_engine
    from presrm.generate import STEP_STOP, step_prompt
    from presrm.search import step_sampler

    generator = args.natural_model or args.model
    if engine is None:
        with open_engine(generator, args.engine_options(adapter=False)) as own:
            return natural_set_for(args, task, own)
    problems = load_problems(task, limit=args.limit, data_file=args.data_file)
    search = SearchConfig(k=args.natural_k, temperature=args.natural_temperature, top_p=0.95,
                          max_step_tokens=NATURAL_STEP_TOKENS, batch_size=32)
    sampler = step_sampler(engine, search, [STEP_STOP, *task.stop])
    nat = build_natural_set(problems, partial(step_prompt, engine.tok, task), sampler,
                            max_steps=args.natural_max_steps, seed=args.seed)
    nat.meta.update(generator=generator, task=task.name, limit=args.limit, k=args.natural_k,
                    temperature=args.natural_temperature, top_p=0.95, max_step_tokens=NATURAL_STEP_TOKENS,
                    hardware=engine.describe()["hardware"], engine=engine.name)
    write_natural_set(path, nat)
    log.info("Natural set written to %s: %s", path, {k: nat.meta[k] for k in ("steps", "correct", "incorrect")})
    return nat


NATURAL_STEP_TOKENS = 96
"""Cap on a sampled candidate step of the natural set, in tokens (the search's default)."""


def run_judge_eval(args: JudgeEvalArgs, engine=None) -> dict[str, Any]:
    """Load the labelled sets and the model, judge, and write ``results.json`` and ``samples.jsonl``.

    ``engine``: an open engine holding ``args.model`` to judge on (left open); default: one of its own.

    The main set is ``--labelled FILE`` (ProcessBench format) or else the synthetic set built from
    the task; with ``--natural FILE`` the natural set is judged too (built first when missing).
    """
    from presrm.data import load_problems, load_task
    from presrm.engine import open_engine
    from presrm.judge import context_options, make_judge
    from presrm.labelled import read_processbench

    args.validate()
    task = load_task(args.task, args.tasks_dir)
    if args.labelled:
        labelled = read_processbench(args.labelled)
    else:
        problems = load_problems(task, limit=args.limit, data_file=args.data_file)
        labelled = build_labelled_set(problems, seed=args.seed)
        if not labelled.solutions:
            raise ConfigError(f"no labelled solutions could be built from {len(problems)} problems of task "
                              f"{task.name} (they need GSM8K-style gold solutions with checkable arithmetic)")
    log.info("Labelled set: %s", labelled.stats)
    # The natural set's generator shares the judge's engine when it is the same model; otherwise it is built
    # first, on an engine of its own closed before the judge's opens (two vLLM engines would not fit one GPU).
    shared = (args.natural_model or args.model) == args.model and args.adapter is None
    nat = natural_set_for(args, task) if args.natural and not shared else None
    with contextlib.nullcontext(engine) if engine is not None else open_engine(args.model, args.engine_options()) \
            as engine:
        if args.natural and shared:
            nat = natural_set_for(args, task, engine)
        options = {**args.judge_kwargs(), **({"template": args.template} if args.template else {}),
                   **context_options(args.mode, task=args.task, tasks_dir=args.tasks_dir, seed=args.seed)}
        judge = make_judge(args.mode, engine, **options)
        metrics, samples = evaluate_judge(judge, labelled, threshold=args.threshold, seed=args.seed)
        nat_metrics, nat_samples = evaluate_natural(judge, nat, seed=args.seed) if nat is not None else (None, [])
        described = engine.describe()
    protocol = {"mode": args.mode, "template": args.template or f"presrm/prompts/{args.mode}.jinja (built-in)",
                "threshold": args.threshold if args.mode == "pointwise" else None, "model": args.model,
                "adapter": args.adapter, "seed": args.seed, "task": task.name, "limit": args.limit,
                "judge_options": {k: getattr(judge, k) for k in JUDGE_OPTIONS if hasattr(judge, k)},
                **described, "command": args.command()}
    source = ({"source": "processbench-format file", "path": args.labelled} if args.labelled
              else {"source": "synthetic (gold + verifier-confirmed perturbations)", **synthetic_protocol()})
    results = {"schema_version": SCHEMA_VERSION, "protocol": protocol, **metrics,
               "labelled_set": {**labelled.stats, **source}}
    out = Path(args.output_dir)
    if nat is not None:
        results["natural"] = {"path": args.natural, **nat_metrics}
        write_jsonl(out / "natural_samples.jsonl", nat_samples)
    write_jsonl(out / "samples.jsonl", samples)
    write_json(out / "results.json", results)
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few human-readable lines for the CLI."""
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    pb, pw, n, sp = results["processbench"], results["pairwise"], results["n"], results["speed"]
    lines = [f"{results['protocol']['mode']} judge on {n['solutions']} solutions "
             f"({n['correct_solutions']} correct, {n['flawed_solutions']} flawed) from {n['problems']} problems"]
    if pb.get("f1") is not None or "acc_flawed" in pb:
        lines.append(f"ProcessBench F1 {fmt(pb['f1'])} (first error {fmt(pb['acc_flawed'])}, "
                     f"no error {fmt(pb['acc_correct'])}); step AUROC {fmt(results['step_auroc']['value'])}")
    if pw.get("accuracy") is not None:
        lines.append(f"pairwise accuracy {fmt(pw['accuracy'])} (ties {fmt(pw['tie_rate'])}, "
                     f"unparseable {fmt(pw['unparseable_rate'])}, n={pw['n']})")
    if results["solution_auroc"].get("value") is not None:
        lines.append(f"solution AUROC {fmt(results['solution_auroc']['value'])} "
                     f"({results['solution_auroc']['score']})")
    lines.append(f"{fmt(sp['steps_per_s'])} steps judged/s ({sp['judged']} {sp['unit']}s in {sp['seconds']:.1f} s)")
    nat = results.get("natural")
    if nat:
        auc, npw = nat["step_auroc"], nat["pairwise"]

        def ci(block: dict[str, Any]) -> str:
            return "" if not block.get("ci95") else f" [{block['ci95'][0]:.3f}, {block['ci95'][1]:.3f}]"
        lines.append(f"natural set ({nat['set'].get('steps')} steps by {nat['set'].get('generator')}): "
                     f"step AUROC {fmt(auc.get('value'))}{ci(auc)} ({auc.get('n_correct', 0)} right, "
                     f"{auc.get('n_incorrect', 0)} wrong); pairwise accuracy {fmt(npw['accuracy'])}{ci(npw)} "
                     f"(n={npw['n']} couples at the same prefix)")
    return lines
