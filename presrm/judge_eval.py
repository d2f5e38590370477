"""How good is the self-judge? Measured against solutions whose first error is known.

The labelled set is built from GSM8K gold solutions (:func:`build_labelled_set`):
each gold solution in ``Step n:`` form (every step correct, first error -1),
plus a copy in which one step's arithmetic result is changed (the first error
is that step; later steps are left as they were). The verifier confirms every
label: a perturbed step must check ``incorrect`` and the steps before it must
not; candidates it rejects are counted, not kept.

Metrics (pure functions, each with a table-driven test):

* :func:`processbench` -- ProcessBench F1: the harmonic mean of exact
  first-error accuracy on flawed solutions and "no error" accuracy on correct ones;
* :func:`auroc` -- ranking quality with ties counted half (Mann-Whitney);
* :func:`pairwise_accuracy` -- a correct step vs its perturbed twin; ties and
  unparseable verdicts count 0.5.

:func:`evaluate_judge` runs any judge of :mod:`presrm.judge` (pointwise,
pairwise, generative, outcome) on the set; :func:`run_judge_eval` is the
``presrm judge-eval`` command.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from presrm.errors import ConfigError
from presrm.jsonio import write_json, write_jsonl
from presrm.schema import Problem
from presrm.steps import format_steps, gold_to_steps
from presrm.verify import check_step

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODES = ("pointwise", "pairwise", "generative", "outcome")
MAX_TRIES = 8
"""Perturbation candidates tried per problem before it is given up."""
DELTAS = (1, 2, 3, 5, 10)
JUDGE_OPTIONS = ("batch_size", "both_orders", "tie_margin", "max_new_tokens", "prefix_cache")
"""Judge attributes recorded in the protocol when the judge has them."""

# A number right after "=" (an optional "$"), that is not itself the start of more arithmetic.
_RESULT = re.compile(
    r"=[ \t]*\$?[ \t]*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?![\d.,]*\d)(?![ \t]*(?:[-+*/×÷^(]|x[ \t]*\d))"
)


@dataclass(frozen=True)
class LabelledSolution:
    """One solution with a known first error (-1: every step is correct).

    ``original_step`` is the correct twin of the perturbed step; ``perturbation``
    says which number changed (``{"from": "24", "to": "27", "delta": 3}``).
    """

    id: str
    problem_id: str
    question: str
    steps: tuple[str, ...]
    first_error: int
    original_step: str | None = None
    perturbation: dict[str, Any] | None = None

    @property
    def flawed(self) -> bool:
        return self.first_error >= 0


@dataclass
class LabelledSet:
    """The solutions, and how the verifier filtered their construction."""

    solutions: list[LabelledSolution]
    stats: dict[str, int] = field(default_factory=dict)


def perturb(step: str, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Every way to change one arithmetic result of ``step``, in a seeded random order.

    A result is a number right after ``=`` that starts no further arithmetic.
    It moves by a random delta (up or down; never below zero), keeping its
    decimals and thousands separators.

    >>> [(t, p["to"]) for t, p in perturb("Step 1: 48/2 = 24 clips", random.Random(0))]
    [('Step 1: 48/2 = 19 clips', '19')]
    """
    out = []
    for m in _RESULT.finditer(step):
        raw = m.group("num")
        value = Decimal(raw.replace(",", ""))
        delta = rng.choice(DELTAS) * rng.choice((1, -1))
        if value + delta < 0:
            delta = -delta
        new = format(value + delta, "," if "," in raw else "")
        text = step[: m.start("num")] + new + step[m.end("num") :]
        out.append((text, {"from": raw, "to": new, "delta": delta, "char": m.start("num")}))
    rng.shuffle(out)
    return out


def build_labelled_set(problems: Sequence[Problem], *, seed: int = 0) -> LabelledSet:
    """Gold and perturbed solutions for problems with a gold solution, confirmed by the verifier.

    Deterministic: each problem's choices come from ``random.Random(f"{seed}:{problem.id}")``,
    so a problem's items do not depend on which other problems are in the set.

    >>> p = Problem("p1", "Tom has 3 apples and buys 4. How many?", "7", "3 + 4 = <<3+4=7>>7\\n#### 7")
    >>> [(s.first_error, s.steps[0]) for s in build_labelled_set([p]).solutions]
    [(-1, 'Step 1: 3 + 4 = 7'), (0, 'Step 1: 3 + 4 = 9')]
    """
    stats = dict.fromkeys(("problems", "no_solution", "gold_kept", "gold_rejected", "perturbed_kept",
                           "candidates_tried", "candidates_rejected", "no_candidate"), 0)
    out: list[LabelledSolution] = []
    for problem in problems:
        stats["problems"] += 1
        if not problem.solution:
            stats["no_solution"] += 1
            continue
        steps = tuple(format_steps(gold_to_steps(problem.solution)).split("\n"))
        verdicts = [check_step(s).verdict for s in steps]
        if "incorrect" in verdicts:
            stats["gold_rejected"] += 1
        else:
            stats["gold_kept"] += 1
            out.append(LabelledSolution(f"{problem.id}/gold", problem.id, problem.question, steps, -1))
        flawed = _perturbed(problem, steps, verdicts, random.Random(f"{seed}:{problem.id}"), stats)
        if flawed is not None:
            out.append(flawed)
    return LabelledSet(out, stats)


def _perturbed(problem: Problem, steps: tuple[str, ...], verdicts: list[str], rng: random.Random,
               stats: dict[str, int]) -> LabelledSolution | None:
    """The first verifier-confirmed perturbation among the problem's candidates (in seeded order)."""
    candidates = [(k, text, info) for k, step in enumerate(steps) if verdicts[k] == "correct"
                  and "incorrect" not in verdicts[:k] for text, info in perturb(step, rng)]
    rng.shuffle(candidates)
    if not candidates:
        stats["no_candidate"] += 1
        return None
    for k, text, info in candidates[:MAX_TRIES]:
        stats["candidates_tried"] += 1
        if check_step(text).verdict != "incorrect":
            stats["candidates_rejected"] += 1
            continue
        stats["perturbed_kept"] += 1
        new_steps = (*steps[:k], text, *steps[k + 1 :])
        return LabelledSolution(f"{problem.id}/perturbed", problem.id, problem.question, new_steps, k,
                                original_step=steps[k], perturbation={"step": k, **info})
    return None


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
        if sol.flawed:  # its correct twin, for the pairwise comparison
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
        if sol.flawed:
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

    flawed = [s for s in solutions if s.flawed]
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

    The judge's kind is read from its methods: ``score`` (per-step, pointwise),
    ``compare`` (pairwise or generative), ``score_solutions`` (outcome).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
    sols = labelled.solutions
    if hasattr(judge, "score"):
        metrics, samples, speed = _eval_pointwise(judge, sols, threshold)
    elif hasattr(judge, "compare"):
        metrics, samples, speed = _eval_pairwise(judge, sols, seed)
    elif hasattr(judge, "score_solutions"):
        metrics, samples, speed = _eval_outcome(judge, sols)
    else:
        raise ConfigError(f"judge {type(judge).__name__} has none of score, compare, score_solutions")
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

    def validate(self) -> None:
        checks = [
            (self.mode in MODES, f"--judge must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
            (0.0 <= self.threshold <= 1.0 and not math.isnan(self.threshold),
             f"--threshold must be in [0, 1], got {self.threshold}"),
            (self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16: {self.precision!r}"),
            *[(v is None or v >= 1, f"{flag} must be at least 1, got {v}") for flag, v in self.judge_options().items()],
            (not Path(self.output_dir).is_file(), f"--output-dir {self.output_dir} is a file, not a folder"),
            (self.template is None or Path(self.template).is_file(), f"--template {self.template} does not exist"),
            (self.adapter is None or Path(self.adapter).is_dir(), f"--adapter {self.adapter} is not a folder"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def command(self) -> str:
        """The ``presrm judge-eval`` command line that reproduces this run."""
        parts = ["presrm judge-eval", f"--model {self.model}", f"--judge {self.mode}", f"--limit {self.limit}",
                 f"--output-dir {self.output_dir}", f"--threshold {self.threshold}", f"--seed {self.seed}"]
        optional = {"--precision": None if self.precision == "auto" else self.precision, "--adapter": self.adapter,
                    "--task": self.task if self.task != "gsm8k" else None,
                    "--tasks-dir": self.tasks_dir, "--data-file": self.data_file, "--template": self.template,
                    **self.judge_options()}
        return " ".join(parts + [f"{flag} {value}" for flag, value in optional.items() if value is not None])

    def judge_options(self) -> dict[str, Any]:
        """The options given to the judge's constructor, as ``--flag: value``; unset ones keep its defaults."""
        generates = self.mode in ("generative", "outcome")
        return {"--batch-size": self.batch_size, "--max-new-tokens": self.max_new_tokens if generates else None}


def run_judge_eval(args: JudgeEvalArgs) -> dict[str, Any]:
    """Build the labelled set, load the model, judge, and write ``results.json`` and ``samples.jsonl``."""
    from presrm.data import load_problems, load_task
    from presrm.judge import make_judge
    from presrm.models import hardware, load_model

    args.validate()
    task = load_task(args.task, args.tasks_dir)
    problems = load_problems(task, limit=args.limit, data_file=args.data_file)
    labelled = build_labelled_set(problems, seed=args.seed)
    if not labelled.solutions:
        raise ConfigError(f"no labelled solutions could be built from {len(problems)} problems of task "
                          f"{task.name} (they need GSM8K-style gold solutions with checkable arithmetic)")
    log.info("Labelled set: %s", labelled.stats)
    model, tok = load_model(args.model, device=args.device, precision=args.precision)
    if args.adapter:
        from presrm.train import load_with_adapter

        model = load_with_adapter(model, args.adapter)
    options = {flag[2:].replace("-", "_"): v for flag, v in args.judge_options().items() if v is not None}
    judge = make_judge(args.mode, model, tok, template=args.template, **options)
    metrics, samples = evaluate_judge(judge, labelled, threshold=args.threshold, seed=args.seed)
    protocol = {"mode": args.mode, "template": args.template or f"presrm/prompts/{args.mode}.jinja (built-in)",
                "threshold": args.threshold if args.mode == "pointwise" else None, "model": args.model,
                "adapter": args.adapter, "seed": args.seed, "task": task.name, "limit": args.limit,
                "judge_options": {k: getattr(judge, k) for k in JUDGE_OPTIONS if hasattr(judge, k)},
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "device": str(next(model.parameters()).device), "command": args.command(),
                "hardware": hardware(next(model.parameters()).device, next(model.parameters()).dtype)}
    results = {"schema_version": SCHEMA_VERSION, "protocol": protocol, **metrics,
               "labelled_set": {**labelled.stats, "perturbation_deltas": list(DELTAS), "max_tries": MAX_TRIES}}
    out = Path(args.output_dir)
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
    return lines
