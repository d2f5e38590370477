"""presrm.judge_eval: the verifier-labelled set, the metrics, fake judges of every kind, and the CLI."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presrm.cli import main
from presrm.errors import ConfigError
from presrm.judge_eval import (
    auroc,
    evaluate_judge,
    first_error,
    pairwise_accuracy,
    position_bias,
    processbench,
)
from presrm.labelled import LabelledSet, build_labelled_set
from presrm.perturb import perturb
from presrm.schema import Problem
from presrm.verify import check_step
from tests.gsm8k_data import GSM8K_DIR

GOLD = [
    Problem("p1", "Tom has 3 apples and buys 4. How many?", "7", "3 + 4 = <<3+4=7>>7\n#### 7"),
    Problem("p2", "A box holds 6 pens. How many in 5 boxes, then 2 more?", "32",
            "6 * 5 = <<6*5=30>>30 pens\nThen 30 + 2 = <<30+2=32>>32 pens.\n#### 32"),
    Problem("p3", "Sam had 20 dollars and spent 8. How much is left?", "12", "He has 20 - 8 = $12 left.\n#### 12"),
]


# --------------------------------------------------------------------------- the labelled set


def _assert_confirmed(labelled: LabelledSet) -> None:
    """Every label is what the verifier says, and a flawed copy differs from gold in one step only."""
    for sol in labelled.solutions:
        verdicts = [check_step(s).verdict for s in sol.steps]
        if not sol.flawed:
            assert "incorrect" not in verdicts and sol.original_step is None
            continue
        k = sol.first_error
        assert verdicts[k] == "incorrect" and "incorrect" not in verdicts[:k]
        assert check_step(sol.original_step).verdict == "correct"
        assert sol.steps[k] != sol.original_step
        assert sol.perturbation["from"] in sol.original_step and sol.perturbation["to"] in sol.steps[k]


def test_labelled_set_on_synthetic_gold():
    labelled = build_labelled_set(GOLD, seed=0)
    _assert_confirmed(labelled)
    ids = [s.id for s in labelled.solutions]
    assert ids == ["p1/gold", "p1/perturbed", "p2/gold", "p2/perturbed", "p3/gold", "p3/perturbed"]
    assert labelled.solutions[2].steps == ("Step 1: 6 * 5 = 30 pens", "Step 2: Then 30 + 2 = 32 pens.",
                                           "Step 3: The answer is 32.")
    assert labelled.stats == {"problems": 3, "no_solution": 0, "gold_kept": 3, "gold_rejected": 0,
                              "perturbed_kept": 3, "candidates_tried": 3, "candidates_rejected": 0,
                              "no_candidate": 0}


@pytest.mark.parametrize(("problem", "counters", "ids"), [
    (Problem("a", "q", "7", None), {"no_solution"}, []),
    # The gold step is wrong, so neither it nor a perturbation of it can be labelled.
    (Problem("b", "q", "15", "7 * 2 = 15 dollars\n#### 15"), {"gold_rejected", "no_candidate"}, []),
    (Problem("c", "q", "4", "She has four apples.\n#### 4"), {"gold_kept", "no_candidate"}, ["c/gold"]),
])
def test_labelled_set_skips_what_it_cannot_label(problem, counters, ids):
    labelled = build_labelled_set([problem])
    assert {k for k, v in labelled.stats.items() if v and k != "problems"} == counters
    assert [s.id for s in labelled.solutions] == ids


def test_verifier_rejects_perturbations_that_are_no_claim():
    # "1 hour = 60 minutes" is no arithmetic claim: changing 60 leaves the step "correct", so it is rejected.
    problem = Problem("h", "q", "4", "1 hour = 60 minutes so 2 + 2 = <<2+2=4>>4 hours.\n#### 4")
    rejected = 0
    for seed in range(12):
        labelled = build_labelled_set([problem], seed=seed)
        _assert_confirmed(labelled)
        rejected += labelled.stats["candidates_rejected"]
        flawed = [s for s in labelled.solutions if s.flawed]
        assert len(flawed) == 1 and flawed[0].perturbation["from"] == "4"
        assert labelled.stats["candidates_tried"] == labelled.stats["candidates_rejected"] + 1
    assert rejected > 0


@pytest.mark.parametrize(("step", "results"), [
    ("Step 1: 48/2 = 24 clips", ["24"]),
    ("Step 1: 2 + 3 = 5 = 10 / 2", ["5"]),  # the "10" starts more arithmetic
    ("Step 1: 80,000+50,000=$130,000", ["130,000"]),
    ("Step 1: 3 * 1.5 = 4.5 and 4.5 + 1 = 5.5", ["4.5", "5.5"]),
    ("Step 2: The answer is 7.", []),
])
def test_perturb_changes_only_results(step, results):
    out = perturb(step, random.Random(0))
    assert sorted(info["from"] for _, info in out) == sorted(results)
    for text, info in out:
        at = info["char"]
        assert text[:at] == step[:at] and text[at:].startswith(info["to"]) and step[at:].startswith(info["from"])
        assert text[at + len(info["to"]):] == step[at + len(info["from"]):]
        assert float(info["to"].replace(",", "")) >= 0 and info["to"] != info["from"]
        assert ("," in info["to"]) == ("," in info["from"])
        assert ("." in info["to"]) == ("." in info["from"])


@pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").exists(), reason="GSM8K data not found")
def test_labelled_set_on_gsm8k_is_confirmed_and_deterministic():
    from presrm.data import load_problems, load_task

    problems = load_problems(load_task("gsm8k"), limit=60)
    a, b = build_labelled_set(problems, seed=0), build_labelled_set(problems, seed=0)
    assert a.solutions == b.solutions and a.stats == b.stats
    _assert_confirmed(a)
    assert a.stats["gold_kept"] >= 55 and a.stats["perturbed_kept"] >= 50
    other = build_labelled_set(problems, seed=1)
    assert [s.steps for s in other.solutions] != [s.steps for s in a.solutions]
    # A problem's items do not depend on the rest of the set.
    head = build_labelled_set(problems[:20], seed=0)
    assert head.solutions == a.solutions[: len(head.solutions)]


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(("scores", "threshold", "expected"), [
    ([0.9, 0.4, 0.2], 0.5, 1),
    ([0.9, 0.8], 0.5, -1),
    ([0.5, 0.1], 0.5, 1),  # equal to the threshold is not an error
    ([0.3], 0.2, -1),
    ([], 0.5, -1),
])
def test_first_error(scores, threshold, expected):
    assert first_error(scores, threshold) == expected


@pytest.mark.parametrize(("pred", "gold", "f1", "acc_flawed", "acc_correct"), [
    ([1, -1], [1, -1], 1.0, 1.0, 1.0),
    ([2, -1, -1, 0], [2, 1, -1, -1], 0.5, 0.5, 0.5),
    ([0, 3, 1], [1, 2, -1], 0.0, 0.0, 0.0),  # early, late, and a false alarm
    ([1, 2, -1, 0], [1, 2, -1, -1], 2 / 3, 1.0, 0.5),
    ([-1, -1], [-1, -1], None, None, 1.0),  # no flawed solution: no F1
    ([1], [1], None, 1.0, None),
])
def test_processbench(pred, gold, f1, acc_flawed, acc_correct):
    out = processbench(pred, gold)
    assert out["f1"] == pytest.approx(f1) if f1 is not None else out["f1"] is None
    assert out["acc_flawed"] == pytest.approx(acc_flawed) if acc_flawed is not None else out["acc_flawed"] is None
    assert out["acc_correct"] == pytest.approx(acc_correct) if acc_correct is not None else out["acc_correct"] is None
    assert out["n_flawed"] + out["n_correct"] == len(gold)


def test_processbench_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        processbench([1, 2], [1])


@pytest.mark.parametrize(("scores", "labels", "expected"), [
    ([0.9, 0.8, 0.3], [True, False, False], 1.0),
    ([0.1, 0.8, 0.9], [True, False, False], 0.0),
    ([0.5, 0.5, 0.5], [True, False, True], 0.5),
    ([0.5, 0.5, 0.9, 0.1], [True, False, True, False], 0.875),  # one tied pair counts half
    ([0.2, 0.6, 0.4, 0.8], [False, True, True, False], 0.5),
    ([0.3, 0.4], [True, True], None),
    ([], [], None),
])
def test_auroc(scores, labels, expected):
    assert auroc(scores, labels) == (pytest.approx(expected) if expected is not None else None)


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.booleans()), max_size=30))
def test_auroc_equals_pair_counting(rows):
    pos = [s for s, y in rows if y]
    neg = [s for s, y in rows if not y]
    expected = None
    if pos and neg:
        expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    got = auroc([s for s, _ in rows], [y for _, y in rows])
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("outcomes", "accuracy", "parsed", "ties", "unparseable"), [
    ([1, 1, 0, 0.5], 0.625, 0.625, 0.25, 0.0),
    ([1, None], 0.75, 1.0, 0.0, 0.5),
    ([None], 0.5, None, 0.0, 1.0),
    ([0.5, 0.5], 0.5, 0.5, 1.0, 0.0),
    ([], None, None, None, None),
])
def test_pairwise_accuracy(outcomes, accuracy, parsed, ties, unparseable):
    out = pairwise_accuracy(outcomes)
    assert (out["accuracy"], out["accuracy_parsed"], out["tie_rate"], out["unparseable_rate"]) == (
        accuracy, parsed, ties, unparseable)
    assert out["n"] == len(outcomes)


@pytest.mark.parametrize(("orders", "expected"), [
    ([("AB", "A"), ("BA", "B")], 1.0),  # always the first shown
    ([("AB", "B"), ("BA", "A")], 0.0),  # always the second shown
    ([("AB", "A"), ("BA", "A")], 0.5),  # always the same step: no position bias
    ([("AB", None), ("BA", "B")], 1.0),
    ([("AB", None)], None),
])
def test_position_bias(orders, expected):
    assert position_bias([{"order": o, "verdict": v} for o, v in orders]) == expected


def test_pairwise_accuracy_rejects_other_values():
    with pytest.raises(ValueError, match="0.3"):
        pairwise_accuracy([1, 0.3])


# --------------------------------------------------------------------------- fake judges of every kind


class OraclePointwise:
    """Scores a step with the verifier's verdict: a perfect judge."""

    mode, unit = "pointwise", "step"

    def score(self, items, *, desc=None):
        return [0.1 if check_step(it.step).verdict == "incorrect" else 0.9 for it in items]


class ConstantPointwise:
    mode, unit = "pointwise", "step"

    def score(self, items, *, desc=None):
        return [0.7] * len(items)


class FakePairwise:
    """Always answers ``answer`` ("A", "B", "tie", or "oracle": the verifier's choice; None: unparseable)."""

    mode, unit = "pairwise", "pair"
    both_orders = True

    def __init__(self, answer):
        self.answer = answer

    def _winner(self, pair):
        if self.answer == "oracle":
            return "B" if check_step(pair.a).verdict == "incorrect" else "A"
        return self.answer

    def compare(self, items, *, desc=None):
        out = []
        for pair in items:
            w = self._winner(pair)
            p_a = None if w is None else {"A": 0.9, "B": 0.1, "tie": 0.5}[w]
            out.append(SimpleNamespace(winner=w, p_a=p_a, orders=[{"order": "AB", "p_a": p_a, "verdict": w,
                                                                   "raw": None}], raw=None))
        return out


class FakeOutcome:
    mode, unit = "outcome", "solution"

    def score_solutions(self, questions, solutions, *, desc=None):
        assert len(questions) == len(solutions)
        return [None if "Step 3" in sol else 0.2 if any(check_step(line).verdict == "incorrect"
                                                         for line in sol.split("\n")) else 0.8
                for sol in solutions]


def test_oracle_pointwise_judge_is_perfect():
    metrics, samples = evaluate_judge(OraclePointwise(), build_labelled_set(GOLD))
    assert metrics["processbench"]["f1"] == 1.0 and metrics["step_auroc"]["value"] == 1.0
    assert metrics["pairwise"]["accuracy"] == 1.0 and metrics["solution_auroc"]["value"] == 1.0
    assert metrics["n"] == {"problems": 3, "solutions": 6, "correct_solutions": 3, "flawed_solutions": 3}
    # p1 (1 step + answer), p2 (2 + answer), p3 (1 + answer), each flawed copy's new steps, no duplicates.
    assert metrics["step_auroc"]["n_incorrect"] == 3 and metrics["speed"]["unit"] == "step"
    assert [s["predicted_first_error"] for s in samples] == [s["first_error"] for s in samples]
    assert metrics["processbench_best_threshold"]["f1"] == 1.0
    assert metrics["step_auroc"]["mean_score_correct"] == pytest.approx(0.9)
    assert metrics["step_auroc"]["mean_score_incorrect"] == pytest.approx(0.1)
    assert all(s["steps"] and s["problem_id"] in {"p1", "p2", "p3"} for s in samples)


def test_constant_pointwise_judge_is_chance():
    metrics, _ = evaluate_judge(ConstantPointwise(), build_labelled_set(GOLD), threshold=0.5)
    pb = metrics["processbench"]
    assert (pb["f1"], pb["acc_flawed"], pb["acc_correct"]) == (0.0, 0.0, 1.0)
    assert metrics["step_auroc"]["value"] == 0.5
    assert metrics["pairwise"]["accuracy"] == 0.5 and metrics["pairwise"]["tie_rate"] == 1.0
    # No threshold helps a constant judge: it flags all steps (1.0: no correct solution left) or none (0.7).
    best = metrics["processbench_best_threshold"]
    assert (best["threshold"], best["f1"]) == (0.7, 0.0)
    # A threshold above every score flags the first step of every solution.
    metrics, _ = evaluate_judge(ConstantPointwise(), build_labelled_set(GOLD), threshold=0.8)
    assert metrics["processbench"]["acc_correct"] == 0.0


@pytest.mark.parametrize(("answer", "accuracy", "tie_rate"), [
    ("oracle", 1.0, 0.0), ("tie", 0.5, 1.0), (None, 0.5, 0.0),
])
def test_pairwise_judges(answer, accuracy, tie_rate):
    metrics, samples = evaluate_judge(FakePairwise(answer), build_labelled_set(GOLD))
    assert metrics["pairwise"]["accuracy"] == accuracy and metrics["pairwise"]["tie_rate"] == tie_rate
    assert metrics["processbench"]["f1"] is None and "no per-step score" in metrics["processbench"]["reason"]
    assert metrics["step_auroc"]["value"] is None
    assert len(samples) == 3 and metrics["speed"]["unit"] == "pair" and metrics["speed"]["prompts"] == 6
    assert metrics["pairwise"]["accuracy_no_margin"] == accuracy


def test_pairwise_position_bias_shows_as_chance():
    """A judge that always says A is right exactly when the seeded side put the correct step first."""
    labelled = build_labelled_set([*GOLD, *[Problem(f"x{i}", "q", "9", "4 + 5 = <<4+5=9>>9\n#### 9")
                                              for i in range(20)]])
    metrics, samples = evaluate_judge(FakePairwise("A"), labelled, seed=3)
    sides = [s["correct_is"] for s in samples]
    assert metrics["pairwise"]["accuracy"] == sides.count("A") / len(sides)
    assert 0 < sides.count("A") < len(sides)
    again, _ = evaluate_judge(FakePairwise("A"), labelled, seed=3)
    assert again["pairwise"] == metrics["pairwise"]


def test_outcome_judge_solution_auroc():
    metrics, samples = evaluate_judge(FakeOutcome(), build_labelled_set(GOLD))
    auc = metrics["solution_auroc"]
    assert auc["value"] == 1.0 and auc["unparseable"] == 2 and auc["n_correct"] == 2 and auc["n_flawed"] == 2
    assert metrics["pairwise"]["accuracy"] is None and metrics["processbench"]["f1"] is None
    assert [s["score"] for s in samples][:2] == [0.8, 0.2]


def test_unknown_judge_kind():
    with pytest.raises(ConfigError, match="not step, pair or solution"):
        evaluate_judge(object(), build_labelled_set(GOLD))


# --------------------------------------------------------------------------- the CLI on the tiny model


# --------------------------------------------------------------------------- the headline figures, by hand


def _pair_counting(pos: list[float], neg: list[float]) -> float:
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def step_auroc_by_hand(samples: list[dict]) -> float:
    """The step AUROC recomputed from ``samples.jsonl``: each distinct (question, previous steps, step) once,
    right before a solution's first error and everywhere in a correct one, wrong at the first error, left
    out after it. A flawed solution's correct twin is its correct sibling's step at that place (same score)."""
    known: dict[tuple, tuple[float, bool]] = {}
    for s in samples:
        fe = s["first_error"]
        for k, (step, score) in enumerate(zip(s["steps"], s["step_scores"], strict=True)):
            if 0 <= fe < k:
                break
            known[(s["question"], tuple(s["steps"][:k]), step)] = (score, fe < 0 or k != fe)
    for s in samples:
        if s.get("correct_twin_score") is not None:
            fe = s["first_error"]
            siblings = [t for t in samples if t["problem_id"] == s["problem_id"] and t["first_error"] < 0
                        and t["steps"][:fe] == s["steps"][:fe]]
            if siblings:
                assert siblings[0]["step_scores"][fe] == s["correct_twin_score"]
            else:
                known[("twin", s["id"])] = (s["correct_twin_score"], True)
    return _pair_counting([sc for sc, ok in known.values() if ok], [sc for sc, ok in known.values() if not ok])


def pair_accuracy_by_hand(samples: list[dict]) -> float:
    """Right-vs-wrong accuracy from the verdicts: 1 when the correct side wins, 0.5 for a tie or no verdict."""
    outcomes = [0.5 if s["winner"] in (None, "tie") else float(s["winner"] == s["correct_is"]) for s in samples]
    return sum(outcomes) / len(outcomes)


def _run_cli(tiny_model_dir, gsm8k_like, out, mode, *extra):
    return main(["judge-eval", "--model", str(tiny_model_dir), "--judge", mode, "--data-file", str(gsm8k_like),
                 "--limit", "4", "--device", "cpu", "--precision", "fp32", "--output-dir", str(out), *extra])


def _read(out):
    return (json.loads((out / "results.json").read_text()),
            [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()])


def test_judge_eval_cli_pointwise_writes_complete_results(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    out = tmp_path / "je"
    assert _run_cli(tiny_model_dir, gsm8k_like, out, "pointwise", "--threshold", "0.4") == 0
    res, samples = _read(out)
    assert res["n"]["solutions"] == len(samples) == 8 and res["n"]["flawed_solutions"] == 4
    assert set(res["processbench"]) >= {"f1", "acc_flawed", "acc_correct"}
    assert res["step_auroc"]["value"] == pytest.approx(step_auroc_by_hand(samples))
    twins = [(s["correct_twin_score"], s["step_scores"][s["first_error"]]) for s in samples
             if s.get("correct_twin_score") is not None]
    assert len(twins) == 4 and res["pairwise"]["accuracy"] == pytest.approx(
        sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in twins) / 4)
    for s in samples:  # the first step scored below the threshold, -1 for none
        assert s["predicted_first_error"] == next((k for k, x in enumerate(s["step_scores"]) if x < 0.4), -1)
    assert res["pairwise"]["tie_rate"] is not None and res["speed"]["steps_per_s"] > 0
    assert res["protocol"]["mode"] == "pointwise" and res["protocol"]["threshold"] == 0.4
    assert res["protocol"]["model"] == str(tiny_model_dir) and "--judge pointwise" in res["protocol"]["command"]
    assert res["protocol"]["dtype"] == "float32" and res["protocol"]["judge_options"]["batch_size"] == 16
    assert res["labelled_set"]["perturbed_kept"] == 4 and "candidates_rejected" in res["labelled_set"]
    assert all(len(s["step_scores"]) == len(s["steps"]) for s in samples)
    assert "ProcessBench F1" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["pairwise", "generative"])
def test_judge_eval_cli_pair_modes(tiny_model_dir, gsm8k_like, tmp_path, mode):
    out = tmp_path / mode
    assert _run_cli(tiny_model_dir, gsm8k_like, out, mode, "--max-new-tokens", "3", "--batch-size", "4") == 0
    res, samples = _read(out)
    assert res["n"]["solutions"] == 8 and res["pairwise"]["n"] == len(samples) == 4
    assert res["pairwise"]["accuracy"] == pytest.approx(pair_accuracy_by_hand(samples))
    assert res["processbench"]["f1"] is None
    assert res["protocol"]["judge_options"]["both_orders"] is True
    assert all(len(s["orders"]) == 2 and s["correct_is"] in "AB" for s in samples)
    if mode == "generative":  # three tokens cannot hold an explanation and a verdict: kept raw, not guessed
        assert res["protocol"]["judge_options"]["max_new_tokens"] == 3 and "--max-new-tokens 3" in res[
            "protocol"]["command"]
        assert all(o["raw"] is not None for s in samples for o in s["orders"])
    else:
        assert "--max-new-tokens" not in res["protocol"]["command"] and res["pairwise"]["unparseable_rate"] == 0


def test_judge_eval_cli_outcome(tiny_model_dir, gsm8k_like, tmp_path):
    out = tmp_path / "outcome"
    assert _run_cli(tiny_model_dir, gsm8k_like, out, "outcome", "--max-new-tokens", "3") == 0
    res, samples = _read(out)
    assert len(samples) == 8 and all("raw" in s and "score" in s for s in samples)
    auc = res["solution_auroc"]
    assert auc["n_correct"] + auc["n_flawed"] + auc["unparseable"] == 8
    assert res["pairwise"]["accuracy"] is None and res["speed"]["unit"] == "solution"


@pytest.mark.parametrize(("extra", "message"), [
    (["--threshold", "1.5"], "--threshold must be in [0, 1]"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--template", "/no/such.jinja"], "--template /no/such.jinja does not exist"),
])
def test_judge_eval_cli_bad_args_exit_2(tiny_model_dir, gsm8k_like, tmp_path, capsys, extra, message):
    rc = main(["judge-eval", "--model", str(tiny_model_dir), "--data-file", str(gsm8k_like),
               "--output-dir", str(tmp_path / "o"), *extra])
    assert rc == 2 and message in capsys.readouterr().err


def test_judge_eval_cli_unknown_mode_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["judge-eval", "--judge", "oracle", "--output-dir", str(tmp_path)])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
