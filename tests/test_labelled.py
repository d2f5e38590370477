"""Labelled sets: the one perturbation generator, the natural set, ProcessBench-format files, and their metrics."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presrm.cli import main
from presrm.errors import DataError
from presrm.judge_eval import bootstrap_ci, evaluate_judge, evaluate_natural
from presrm.labelled import (
    build_natural_set,
    natural_meta_path,
    read_natural_set,
    read_processbench,
    right_wrong_couples,
    write_natural_set,
)
from presrm.perturb import KINDS, confirmed_perturbation, perturb, perturb_value
from presrm.schema import Problem
from presrm.verify import check_step
from tests.test_judge_eval import ConstantPointwise, FakePairwise, OraclePointwise, step_auroc_by_hand

# --------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize(("raw", "kind", "expected"), [
    ("1,200", "plus_one", "1,201"),
    ("1,200", "minus_one", "1,199"),
    ("1,200", "times_ten", "12,000"),
    ("4.5", "times_ten", "45.0"),
    ("0.25", "plus_one", "1.25"),
    ("0", "minus_one", "2"),  # never negative when the original was not
    ("0", "times_ten", "2"),  # never equal
    ("-3", "plus_one", "-2"),
])
def test_perturb_value(raw, kind, expected):
    assert perturb_value(raw, kind, random.Random(0)) == expected


@given(st.sampled_from(KINDS), st.integers(0, 10**7), st.integers(0, 3), st.booleans(), st.integers(0, 99))
def test_perturb_value_keeps_notation(kind, whole, decimals, commas, seed):
    raw = f"{whole:,}" if commas else str(whole)
    raw += "." + "5" * decimals if decimals else ""
    new = perturb_value(raw, kind, random.Random(seed))
    assert new != raw and not new.startswith("-")
    assert ("." in new) == ("." in raw) and len(new.partition(".")[2]) == decimals
    if kind != "digit":
        assert ("," in new) <= ("," in raw)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown perturbation kind"):
        perturb_value("3", "double", random.Random(0))


@given(st.integers(1, 999), st.integers(1, 999), st.sampled_from(["+", "*", "-"]), st.integers(0, 50),
       st.sampled_from([("delta",), KINDS]))
def test_confirmed_perturbation_is_verifiably_wrong(a, b, op, seed, kinds):
    value = {"+": a + b, "*": a * b, "-": a - b}[op]
    step = f"Step 1: {a} {op} {b} = {value} apples"
    twin, info = confirmed_perturbation(step, random.Random(seed), kinds=kinds) or (None, None)
    if value < 0:  # the verifier reads "a - b = -c" too; either way the label must be the verifier's
        return
    assert twin is not None and check_step(twin).verdict == "incorrect" and twin != step
    assert info["from"] == str(value) and info["to"] in twin and info["lhs"] == f"{a} {op} {b}"


def test_confirmed_perturbation_needs_a_correct_step():
    assert confirmed_perturbation("Step 1: 3 + 4 = 8", random.Random(0)) is None  # already wrong
    assert confirmed_perturbation("Step 1: The answer is 7.", random.Random(0)) is None  # no claim
    assert perturb("Step 1: 2 + 3 = 5 = 10 / 2", random.Random(0))[0][1]["from"] == "5"


# --------------------------------------------------------------------------- the natural set

Q = [Problem("a", "Tom has 3 apples and buys 4. How many?", "7"), Problem("b", "What is 6 times 5?", "30")]
SCRIPT = {  # step n -> what the "model" writes (a right and a wrong candidate, then the answer)
    1: [" 3 + 4 = 7 apples", " 3 + 4 = 9 apples", " He counts them."],
    2: [" The answer is 7.", " The answer is 7."],
}


def scripted_sampler(prompts, seed):
    return [SCRIPT.get(int(p.rsplit("Step ", 1)[1].rstrip(":")), []) for p in prompts]


def prompt(question, previous, n):
    return f"Q: {question}\n" + "".join(s + "\n" for s in previous) + f"Step {n}:"


def test_natural_set_labels_every_candidate_after_its_own_prefix():
    nat = build_natural_set(Q, prompt, scripted_sampler, max_steps=5, seed=0, desc=None)
    assert nat.meta["problems"] == 2 and nat.meta["steps"] == len(nat.steps) == 2 * (3 + 1)  # duplicates merged
    for s in nat.steps:
        assert s.label == check_step(s.step).verdict
        assert s.group == f"{s.problem_id}/s{len(s.previous) + 1}"
    first = [s for s in nat.steps if s.group == "a/s1"]
    assert [s.label for s in first] == ["correct", "incorrect", "unverifiable"] and first[0].previous == ()
    second = [s for s in nat.steps if s.group == "a/s2"]
    assert second and second[0].previous[0] in {s.step for s in first} and second[0].final
    assert nat.meta["groups_with_right_and_wrong"] == 2 and nat.meta["incorrect"] == 2
    again = build_natural_set(Q[:1], prompt, scripted_sampler, max_steps=5, seed=0, desc=None)
    assert again.steps == [s for s in nat.steps if s.problem_id == "a"]  # a problem's path ignores the others


def test_natural_set_round_trip_and_bad_files(tmp_path):
    nat = build_natural_set(Q, prompt, scripted_sampler, max_steps=3, seed=0, desc=None)
    nat.meta["generator"] = "scripted"
    path = tmp_path / "natural.jsonl"
    write_natural_set(path, nat)
    back = read_natural_set(path)
    assert back.steps == nat.steps and back.meta["generator"] == "scripted"
    assert natural_meta_path(path).name == "natural.meta.json"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1]) | {"label": "maybe"}
    path.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(DataError, match=r"natural.jsonl:2: 'label' must be one of"):
        read_natural_set(path)


def test_evaluate_natural_oracle_constant_and_pairwise():
    nat = build_natural_set(Q, prompt, scripted_sampler, max_steps=3, seed=0, desc=None)
    assert len(right_wrong_couples(nat.steps)) == 2
    metrics, samples = evaluate_natural(OraclePointwise(), nat, resamples=200)
    assert metrics["step_auroc"]["value"] == 1.0 and metrics["pairwise"]["accuracy"] == 1.0
    assert metrics["step_auroc"]["ci95"] == [1.0, 1.0] and metrics["pairwise"]["n"] == 2
    assert metrics["step_auroc"]["n_correct"] == 2 and metrics["step_auroc"]["n_incorrect"] == 2
    assert len(samples) == len(nat.steps) and all("score" in s for s in samples)
    const, _ = evaluate_natural(ConstantPointwise(), nat, resamples=200)
    assert const["step_auroc"]["value"] == 0.5 and const["pairwise"]["accuracy"] == 0.5
    pair, psamples = evaluate_natural(FakePairwise("oracle"), nat, resamples=200)
    assert pair["pairwise"]["accuracy"] == 1.0 and pair["step_auroc"]["value"] is None
    assert {s["right_is"] for s in psamples} <= {"A", "B"}


def test_bootstrap_ci():
    clusters = [i // 2 for i in range(40)]
    assert bootstrap_ci(clusters, [3.0] * 40, lambda xs: sum(xs) / len(xs)) == [3.0, 3.0]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # Each problem holds one 0 and one 1: whole problems are drawn, so every resample's mean is 0.5.
    assert bootstrap_ci(clusters, [float(i % 2) for i in range(40)], mean, resamples=300) == [0.5, 0.5]
    items = [float(i < 20) for i in range(40)]  # problems all right or all wrong: a wide interval
    lo, hi = bootstrap_ci(clusters, items, mean, resamples=300, seed=1)
    assert 0.2 < lo < 0.5 < hi < 0.8
    assert bootstrap_ci(clusters, items, mean, resamples=300, seed=1) == [lo, hi]
    assert bootstrap_ci([], [], lambda xs: 0.0) is None
    assert bootstrap_ci([1], [1.0], lambda xs: None) is None  # the statistic is never defined


# --------------------------------------------------------------------------- ProcessBench-format files

PB = [
    {"id": "x1", "problem": "Tom has 3 apples and buys 4. How many?", "steps": ["3 + 4 = 9", "The answer is 9."],
     "label": 0, "final_answer_correct": False},
    {"id": "x2", "problem": "Tom has 3 apples and buys 4. How many?", "steps": ["3 + 4 = 7", "The answer is 7."],
     "label": -1, "final_answer_correct": True},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_read_processbench(tmp_path, suffix):
    path = tmp_path / f"pb{suffix}"
    path.write_text(json.dumps(PB) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in PB))
    labelled = read_processbench(path)
    assert [(s.id, s.first_error, s.steps) for s in labelled.solutions] == [
        ("x1", 0, ("3 + 4 = 9", "The answer is 9.")), ("x2", -1, ("3 + 4 = 7", "The answer is 7."))]
    metrics, _ = evaluate_judge(OraclePointwise(), labelled)
    assert metrics["processbench"]["f1"] == 1.0 and metrics["step_auroc"]["value"] == 1.0
    assert metrics["pairwise"]["n"] == 0  # no correct twins in such a file: no pairwise comparison invented


@pytest.mark.parametrize(("record", "message"), [
    ({"id": "y", "problem": "q", "steps": ["a"]}, r"pb.jsonl:2: missing key 'label'"),
    ({"id": "y", "problem": "q", "steps": ["a"], "label": 1}, r"pb.jsonl:2: 'label' must be -1 or a step index"),
    ({"id": "y", "problem": "q", "steps": "a", "label": 0}, r"pb.jsonl:2: 'steps' must be a non-empty list"),
    ({"id": "y", "problem": "q", "steps": ["a"], "label": True}, r"pb.jsonl:2: 'label' must be"),
    ({"id": "x1", "problem": "q", "steps": ["a"], "label": 0}, r"id 'x1' appears more than once"),
])
def test_read_processbench_errors_name_the_line(tmp_path, record, message):
    path = tmp_path / "pb.jsonl"
    path.write_text(json.dumps(PB[0]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        read_processbench(path)


def test_read_processbench_json_must_be_a_list(tmp_path):
    path = tmp_path / "pb.json"
    path.write_text(json.dumps({"id": 1}))
    with pytest.raises(DataError, match="expected a JSON list"):
        read_processbench(path)


# --------------------------------------------------------------------------- the CLI on the tiny model


def _cli(tiny_model_dir, gsm8k_like, out, *extra):
    return main(["judge-eval", "--model", str(tiny_model_dir), "--data-file", str(gsm8k_like), "--limit", "3",
                 "--device", "cpu", "--precision", "fp32", "--output-dir", str(out), *extra])


def test_cli_natural_set_is_built_once_and_reused(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    nat = tmp_path / "natural.jsonl"
    args = ["--natural", str(nat), "--natural-k", "2", "--natural-max-steps", "2"]
    assert _cli(tiny_model_dir, gsm8k_like, tmp_path / "a", *args) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    meta = json.loads(natural_meta_path(nat).read_text())
    assert meta["generator"] == str(tiny_model_dir) and meta["k"] == 2 and meta["problems"] == 3
    assert res["natural"]["set"]["steps"] == meta["steps"] == len(nat.read_text().splitlines())
    assert {"value", "n_correct", "n_incorrect", "mean_score"} <= set(res["natural"]["step_auroc"])
    assert res["labelled_set"]["source"].startswith("synthetic")
    assert "natural set" in capsys.readouterr().out
    before, stat = nat.read_text(), nat.stat()
    assert _cli(tiny_model_dir, gsm8k_like, tmp_path / "b", *args) == 0
    # reused, not rebuilt: a rebuild, even one giving the same text, writes a new file in its place
    assert nat.read_text() == before and (nat.stat().st_ino, nat.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    samples = (tmp_path / "b" / "natural_samples.jsonl").read_text().splitlines()
    assert len(samples) == meta["steps"]


def test_cli_labelled_file(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(PB))
    assert _cli(tiny_model_dir, gsm8k_like, tmp_path / "o", "--labelled", str(path)) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["labelled_set"]["source"] == "processbench-format file" and res["n"]["solutions"] == 2
    samples = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert res["processbench"]["f1"] is not None
    assert res["step_auroc"]["value"] == pytest.approx(step_auroc_by_hand(samples))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q"}\n')
    assert _cli(tiny_model_dir, gsm8k_like, tmp_path / "p", "--labelled", str(bad)) == 2
    assert "bad.jsonl:1: missing key 'problem'" in capsys.readouterr().err
    assert _cli(tiny_model_dir, gsm8k_like, tmp_path / "p", "--labelled", str(tmp_path / "none.json")) == 2
