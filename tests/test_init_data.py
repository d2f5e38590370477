"""IFT/EFT dataset builders: pure functions, table-driven, plus a property test for the perturbation."""

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presrm.data import load_problems, load_task
from presrm.generate import response_prompt
from presrm.grading import build_prompt
from presrm.init_data import (
    LabelledPair,
    eft_examples,
    eft_pairwise_examples,
    eft_pointwise_examples,
    explanation,
    ift_example,
    ift_examples,
    labelled_pairs,
    on_policy_examples,
)
from presrm.judges.registry import spec
from presrm.labelled import NaturalStep
from presrm.perturb import KINDS, confirmed_perturbation
from presrm.schema import Problem
from presrm.verify import check_step

TASK = load_task("gsm8k_train")
GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


@pytest.mark.parametrize("body", [
    "Natalia sold 48/2 = 24 clips in May.",
    "Weng earns 12/60 = $0.2 per minute.",
    "This means, Betty needs 100 - 50 - 30 - 15 = $5 more.",
    "He pays 3 * $1,200 = $3,600 in total.",
])
def test_perturbed_twin_is_verifiably_wrong(body):
    twin, info = confirmed_perturbation(body, random.Random(0), kinds=KINDS)
    assert twin != body and check_step(body).verdict == "correct" and check_step(twin).verdict == "incorrect"
    assert info["lhs"] in body and info["wrong_rhs"] in twin and info["kind"] in KINDS


@pytest.mark.parametrize("body", ["The answer is 72.", "She has some apples.", "3 + 4 = 8 apples."])
def test_perturbation_needs_a_verified_claim(body):
    assert confirmed_perturbation(body, random.Random(0), kinds=KINDS) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 999), st.integers(1, 999), st.sampled_from("+-*"), st.integers(0, 2**16))
def test_perturbation_property(a, b, op, seed):
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    if value < 0:
        return
    body = f"So he has {a} {op} {b} = {value} coins."
    twin, _ = confirmed_perturbation(body, random.Random(seed), kinds=KINDS)
    assert check_step(twin).verdict == "incorrect"
    assert twin.split("=")[0] == body.split("=")[0]  # only the result changed


def test_ift_prompt_is_the_policy_prompt(tiny):
    tok = tiny[1]
    p = Problem("p", "How many clips?", "72", solution=GOLD)
    ex = ift_example(p.question, p.solution, lambda q: build_prompt(tok, TASK, q),
                     lambda q, steps: response_prompt(tok, TASK, q, steps, shots=()))
    assert ex["prompt"] == build_prompt(tok, TASK, p.question)  # the text search and eval use
    assert ex["completion"] == (" Natalia sold 48/2 = 24 clips in May.\nStep 2: Natalia sold 48+24 = 72 clips.\n"
                                "Step 3: The answer is 72.")
    assert "<<" not in ex["completion"]


def test_ift_examples_skip_problems_without_solution():
    ps = [Problem("a", "q1", "72", solution=GOLD), Problem("b", "q2", "1")]
    out = ift_examples(ps, lambda q: q + "\n", lambda q, steps: q + "\n" + "\n".join(steps))
    assert [(e["id"], e["kind"]) for e in out] == [("a", "ift")] and out[0]["completion"].startswith("Step 1: ")


def test_labelled_pairs_seeded_and_in_context():
    ps = [Problem(f"p{i}", "How many clips?", "72", solution=GOLD) for i in range(6)]
    a, b = labelled_pairs(ps, seed=1), labelled_pairs(ps, seed=1)
    assert a == b and len(a) == 6
    for lp in a:
        n = lp.info["step"]
        assert lp.right.startswith(f"Step {n}: ") and lp.wrong.startswith(f"Step {n}: ")
        assert len(lp.previous) == n - 1 and all(s.startswith("Step ") for s in lp.previous)
        assert check_step(lp.wrong).verdict == "incorrect" and check_step(lp.right).verdict == "correct"


def _pair():
    return LabelledPair("p", "2+2?", ("Step 1: x",), "Step 2: 2 + 2 = 4", "Step 2: 2 + 2 = 5",
                        {"lhs": "2 + 2", "value": "4", "wrong_rhs": "5"})


@pytest.mark.parametrize(("explain", "prefill", "targets"), [
    (False, "", ["[[A]]", "[[B]]"]),
    (False, "[[", ["A]]", "B]]"]),
    (True, "", [explanation(_pair(), "A"), explanation(_pair(), "B")]),
])
def test_eft_pairwise_both_orders(explain, prefill, targets):
    out = eft_pairwise_examples([_pair()], lambda q, prev, a, b: f"{q}|{len(prev)}|{a}|{b}|", explain=explain,
                                prefill=prefill)
    assert [e["completion"] for e in out] == targets and [e["label"] for e in out] == ["A", "B"]
    assert out[0]["prompt"] == "2+2?|1|Step 2: 2 + 2 = 4|Step 2: 2 + 2 = 5|"  # right step shown as A
    assert out[1]["prompt"] == "2+2?|1|Step 2: 2 + 2 = 5|Step 2: 2 + 2 = 4|"
    assert out[0]["completion"].endswith("A]]") and out[1]["completion"].endswith("B]]")


def test_eft_pointwise_balanced():
    out = eft_pointwise_examples([_pair()], lambda q, prev, step: step, spec("pointwise").verdicts)
    assert [(e["prompt"], e["completion"]) for e in out] == [("Step 2: 2 + 2 = 4", "Yes"), ("Step 2: 2 + 2 = 5", "No")]


def test_eft_examples_on_gsm8k_train_are_balanced():
    from tests.gsm8k_data import GSM8K_DIR

    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip("GSM8K data not found")
    ps = load_problems(TASK, limit=40, offset=4000, data_file=str(GSM8K_DIR / "train.jsonl"))
    out = eft_examples(ps, lambda q, prev, a, b: "P", mode="pairwise", prefill="[[")
    assert len(out) >= 60 and Counter(e["completion"] for e in out) == {"A]]": len(out) // 2, "B]]": len(out) // 2}
    with pytest.raises(ValueError, match="judge mode"):
        eft_examples(ps, lambda *a: "P", mode="outcome")


def _natural():
    steps = [("g1", "Step 1: 3 + 4 = 7", "correct"), ("g1", "Step 1: 3 + 4 = 9", "incorrect"),
             ("g1", "Step 1: 3 + 4 = 8", "incorrect"), ("g1", "Step 1: He counts.", "unverifiable"),
             ("g2", "Step 1: 2 * 5 = 10", "correct"), ("g2", "Step 1: 2 * 5 = 12", "incorrect"),
             ("g3", "Step 1: 6 - 1 = 5", "correct")]
    return [NaturalStep(f"{g}/c{i}", g, f"question {g}", (), text, label, g)
            for i, (g, text, label) in enumerate(steps)]


def test_on_policy_pointwise_examples_are_balanced_and_verifier_labelled():
    out = on_policy_examples(_natural(), lambda q, prev, step: f"{q}|{step}", mode="pointwise", seed=0)
    assert Counter(e["completion"] for e in out) == {"Yes": 3, "No": 3}  # 3 right, 3 of the wrong (no unverifiable)
    for e in out:
        step = e["prompt"].split("|")[1]
        assert (check_step(step).verdict == "correct") == (e["completion"] == "Yes") and e["source"] == "on_policy"
    assert out == on_policy_examples(_natural(), lambda q, prev, step: f"{q}|{step}", mode="pointwise", seed=0)


def test_on_policy_pairwise_examples_pair_candidates_of_one_prefix():
    out = on_policy_examples(_natural(), lambda q, prev, a, b: f"{q}|{a}|{b}", mode="pairwise", prefill="[[",
                             per_group=1)
    assert len(out) == 4 and Counter(e["completion"] for e in out) == {"A]]": 2, "B]]": 2}  # g1 and g2, both orders
    for e in out:
        q, a, b = e["prompt"].split("|")
        right = a if e["completion"] == "A]]" else b
        assert check_step(right).verdict == "correct" and e["source"] == "on_policy"
    with pytest.raises(ValueError, match="no on-policy examples for judge mode 'generative'"):
        on_policy_examples(_natural(), lambda *a: "P", mode="generative")  # config refuses such a recipe first
