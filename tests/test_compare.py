"""`presrm compare`: paired accuracy difference and McNemar's test on synthetic runs."""

import json

import pytest

from presrm.cli import main
from presrm.compare import compare_runs, mcnemar
from presrm.errors import DataError


@pytest.mark.parametrize(
    ("b", "c", "p_exact", "p_mid"),
    [  # p_exact checked against scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue
        (0, 0, 1.0, 1.0),
        (0, 1, 1.0, 0.5),
        (1, 1, 1.0, 1.0),
        (2, 0, 0.5, 0.25),
        (3, 7, 0.34375, 0.2265625),
        (0, 10, 0.001953125, 0.0009765625),
        (5, 5, 1.0, 1.0),
        (12, 30, 0.007915897334896727, 0.005401572654591291),
        (40, 60, 0.05688793364098089, 0.046044066929342806),
        (500, 560, 0.06990955946026937, 0.06542204768446869),
    ],
)
def test_mcnemar_matches_binomial_test(b, c, p_exact, p_mid):
    r = mcnemar(b, c)
    assert (r["b"], r["c"], r["n_discordant"]) == (b, c, b + c)
    assert r["p_exact"] == pytest.approx(p_exact, rel=1e-12)
    assert r["p_mid"] == pytest.approx(p_mid, rel=1e-12)
    assert mcnemar(c, b)["p_exact"] == r["p_exact"]  # symmetric


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="must be >= 0"):
        mcnemar(-1, 3)


def _run(folder, outcomes, *, name="results.json", protocol=None, steps=None):
    """Write a minimal evaluation: summary + samples with (strict, flexible) outcomes per id.

    ``steps``: per id ``(steps_wrong, steps_verifiable, steps_timed_out)``; without it the samples
    have no step counts, like those written before they existed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    samples = "samples.jsonl" if name == "results.json" else name.replace(".json", "_samples.jsonl")
    rows = [{"id": pid, "correct_strict": s, "correct_flexible": f} for pid, (s, f) in outcomes.items()]
    for row in rows if steps else []:
        row.update(zip(("steps_wrong", "steps_verifiable", "steps_timed_out"), steps[row["id"]], strict=True))
    (folder / samples).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / name).write_text(json.dumps({"n": len(outcomes), "protocol": protocol or {"task": "gsm8k"}}))
    return folder / name


# (A's outcomes, B's outcomes) -> strict (b, c, difference), flexible (b, c, difference)
CASES = [
    ({"1": (1, 1), "2": (0, 1), "3": (0, 0)}, {"1": (1, 1), "2": (1, 1), "3": (0, 1)}, (0, 1, 1 / 3), (0, 1, 1 / 3)),
    ({"1": (1, 1), "2": (1, 1)}, {"2": (0, 0), "1": (0, 1)}, (2, 0, -1.0), (1, 0, -0.5)),
    ({"x": (0, 0)}, {"x": (0, 0)}, (0, 0, 0.0), (0, 0, 0.0)),
]


@pytest.mark.parametrize(("a", "b", "strict", "flexible"), CASES)
def test_compare_runs_pairs_by_id(tmp_path, a, b, strict, flexible):
    ra, rb = _run(tmp_path / "a", a), _run(tmp_path / "b", b)
    res = compare_runs(ra, rb.parent)  # a file or its folder
    assert res["n"] == len(a)
    for kind, (nb, nc, diff) in (("strict", strict), ("flexible", flexible)):
        r = res[kind]
        assert (r["b"], r["c"]) == (nb, nc)
        assert r["difference"] == pytest.approx(diff)
        assert r["accuracy_b"] - r["accuracy_a"] == pytest.approx(diff)
        assert r["p_exact"] == mcnemar(nb, nc)["p_exact"]


def test_compare_loop_eval_files_and_protocol_differences(tmp_path):
    ra = _run(tmp_path / "run", {"1": (1, 1)}, name="eval_before.json", protocol={"task": "gsm8k", "shots": 0})
    rb = _run(tmp_path / "run", {"1": (0, 1)}, name="eval.json", protocol={"task": "gsm8k", "shots": 4})
    res = compare_runs(ra, rb)
    assert res["strict"]["b"] == 1 and res["protocol_differs"] == ["shots"]


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ({"1": (1, 1), "2": (0, 0)}, {"1": (1, 1), "3": (0, 0)}, "cover different problems: 1 only in A"),
        ({"1": (1, 1)}, {"1": (1, 1), "2": (1, 1)}, "0 only in A .* 1 only in B"),
    ],
)
def test_different_problem_sets_exit_2(tmp_path, capsys, a, b, message):
    ra, rb = _run(tmp_path / "a", a), _run(tmp_path / "b", b)
    with pytest.raises(DataError, match=message):
        compare_runs(ra, rb)
    assert main(["compare", str(ra), str(rb)]) == 2
    assert "cover different problems" in capsys.readouterr().err


def test_common_pairs_only_the_problems_both_evaluated(tmp_path, capsys):
    """A 2-problem subset against a 4-problem evaluation: --common pairs the 2, and says so."""
    ra = _run(tmp_path / "a", {"1": (0, 0), "2": (1, 1)}, steps={"1": (2, 4, 0), "2": (0, 3, 0)})
    rb = _run(tmp_path / "b", {"1": (1, 1), "2": (1, 1), "3": (0, 0), "4": (0, 0)},
              steps={"1": (0, 4, 0), "2": (0, 3, 0), "3": (5, 5, 0), "4": (5, 5, 0)})
    res = compare_runs(ra, rb, common=True)
    assert res["n"] == 2 and res["evaluated"] == {"a": 2, "b": 4}
    assert (res["strict"]["b"], res["strict"]["c"]) == (0, 1)
    assert res["step_errors"]["rate_b"] == 0.0 and res["step_errors"]["difference"] == pytest.approx(-2 / 7)
    assert main(["compare", str(ra), str(rb), "--common"]) == 0
    assert "2 paired problems (of 2 in A and 4 in B)" in capsys.readouterr().out
    disjoint = _run(tmp_path / "c", {"9": (1, 1)})
    with pytest.raises(DataError, match="cover different problems"):
        compare_runs(ra, disjoint, common=True)


def test_duplicate_ids_and_missing_samples_are_errors(tmp_path):
    ra = _run(tmp_path / "a", {"1": (1, 1)})
    (tmp_path / "a" / "samples.jsonl").write_text('{"id": "1", "correct_strict": true, "correct_flexible": true}\n' * 2)
    rb = _run(tmp_path / "b", {"1": (1, 1)})
    with pytest.raises(DataError, match="appears twice"):
        compare_runs(ra, rb)
    (tmp_path / "b" / "samples.jsonl").unlink()
    with pytest.raises(DataError, match="samples.jsonl: missing"):
        compare_runs(rb, rb)
    with pytest.raises(DataError, match="no such results file"):
        compare_runs(tmp_path / "nowhere", rb)


def test_compare_cli_prints_table_and_writes_json(tmp_path, capsys):
    ra = _run(tmp_path / "a", {str(i): (i < 3, i < 5) for i in range(10)})
    rb = _run(tmp_path / "b", {str(i): (i < 8, i < 5) for i in range(10)})
    assert main(["compare", str(ra.parent), str(rb.parent), "--output", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert "10 paired problems" in out and "+50.0%" in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert (saved["strict"]["b"], saved["strict"]["c"]) == (0, 5)
    assert saved["strict"]["p_exact"] == pytest.approx(0.0625)


# ------------------------------------------------------------------ the step error rate, paired

SAME = {p: (1, 1) for p in "abcd"}
# A: wrong / verifiable per problem 1/2, 2/3, 1/1, 0/2 -> pooled 4/8 = 0.5 (a mean of per-problem rates: 0.54)
A_STEPS = {"a": (1, 2, 0), "b": (2, 3, 1), "c": (1, 1, 0), "d": (0, 2, 0)}
B_FIXED = {"a": (0, 2, 0), "b": (0, 3, 0), "c": (0, 1, 0), "d": (0, 2, 0)}  # B fixes every wrong step


def test_paired_step_error_difference_when_b_fixes_every_wrong_step(tmp_path):
    ra = _run(tmp_path / "a", SAME, steps=A_STEPS)
    rb = _run(tmp_path / "b", SAME, steps=B_FIXED)
    e = compare_runs(ra, rb)["step_errors"]
    assert (e["wrong_a"], e["verifiable_a"], e["wrong_b"], e["verifiable_b"]) == (4, 8, 0, 8)
    assert (e["rate_a"], e["rate_b"], e["difference"]) == (0.5, 0.0, -0.5)
    assert (e["timeouts_a"], e["timeouts_b"]) == (1, 0)
    lo, hi = e["ci95"]
    assert lo <= -0.5 <= hi < 0  # the interval excludes 0
    # a resample reaches 0 only when it draws "d" four times: (1/4)^4 of them; p is twice that share
    assert e["p_bootstrap"] == pytest.approx(2 / 256, abs=0.006)
    assert compare_runs(ra, rb)["step_errors"] == e  # seeded: the same interval again
    back = compare_runs(rb, ra)["step_errors"]
    assert back["difference"] == 0.5 and back["ci95"] == [-hi, -lo] and back["p_bootstrap"] == e["p_bootstrap"]


def test_paired_resampling_is_joint(tmp_path):
    """Identical runs with very different problems: every paired resample differs by exactly 0."""
    steps = {"a": (5, 5, 0), "b": (0, 9, 0), "c": (1, 1, 0), "d": (0, 1, 0)}
    ra, rb = _run(tmp_path / "a", SAME, steps=steps), _run(tmp_path / "b", SAME, steps=steps)
    e = compare_runs(ra, rb)["step_errors"]
    assert (e["difference"], e["ci95"], e["p_bootstrap"]) == (0.0, [0.0, 0.0], 1.0)


def test_old_samples_without_step_counts_compare_accuracy_only(tmp_path, capsys):
    ra = _run(tmp_path / "a", SAME)  # written before the step counts existed
    rb = _run(tmp_path / "b", SAME, steps=B_FIXED)
    res = compare_runs(ra, rb)
    assert res["strict"]["b"] == 0 and res["step_errors"]["difference"] is None
    assert "samples of A" in res["step_errors"]["reason"]
    assert main(["compare", str(ra), str(rb)]) == 0
    assert "step errors: no step counts in the samples of A" in capsys.readouterr().out


def test_compare_cli_prints_the_step_error_rows(tmp_path, capsys):
    ra = _run(tmp_path / "a", SAME, steps=A_STEPS)
    rb = _run(tmp_path / "b", SAME, steps=B_FIXED)
    assert main(["compare", str(ra), str(rb), "--output", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert " 50.0%    0.0%  -50.0%" in out and "wrong / verifiable steps: A 4/8, B 0/8" in out
    assert "verifier timeouts: A 1, B 0" in out
    assert json.loads((tmp_path / "cmp.json").read_text())["step_errors"]["difference"] == -0.5


def test_repeats_are_paired_with_mcnemar(tmp_path, capsys):
    loop, fresh = [{"text": "Step 1: 3 + 4 = 7"}, {"text": "Step 2: 3 + 4 = 7"}], [{"text": "Step 1: 3 + 4 = 7"}]
    ra, rb = _run(tmp_path / "a", SAME), _run(tmp_path / "b", SAME)
    for path, looping in ((ra, {"a"}), (rb, {"a", "b", "c"})):  # B repeats on two more problems
        samples = path.parent / "samples.jsonl"
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        for r in rows:
            r["steps"] = loop if r["id"] in looping else fresh
        samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = compare_runs(ra, rb)["repeats"]
    assert (r["count_a"], r["count_b"], r["b"], r["c"]) == (1, 3, 0, 2)
    assert (r["share_a"], r["share_b"], r["p_exact"]) == (0.25, 0.75, 0.5)
    assert main(["compare", str(ra), str(rb)]) == 0
    assert "repeats      25.0%   75.0%  +50.0%" in capsys.readouterr().out
