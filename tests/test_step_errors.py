"""The step error rate (wrong / verifiable steps, pooled over problems), its bootstrap interval, verifier timeouts."""

import time
from types import SimpleNamespace

import pytest

import presrm.verify as verify
from presrm._arith import Budget, Limits
from presrm.evaluate import score_record, step_error_rate, summarize
from presrm.grading import record_step_counts, repeats_a_step, step_counts
from presrm.schema import Problem
from presrm.stats import bootstrap_ci, paired_bootstrap, pooled_ratio
from presrm.verify import TIMEOUT_REASON, check_step, is_timeout


def _record(pid, wrong, verifiable, timed_out=0, correct=False):
    """A graded record as summarize reads it (attributes), with hand-set step counts."""
    return SimpleNamespace(id=pid, steps=[{}] * (verifiable + 1), correct_strict=correct, correct_flexible=correct,
                           pred_strict="1" if correct else None, steps_wrong=wrong, steps_verifiable=verifiable,
                           steps_timed_out=timed_out)


@pytest.mark.parametrize(
    ("verdicts", "counts"),
    [
        ([], (0, 0, 0)),
        (["correct", "incorrect", "unverifiable"], (1, 2, 0)),
        (["incorrect", "incorrect"], (2, 2, 0)),
        (["unverifiable", "unverifiable"], (0, 0, 0)),
    ],
)
def test_step_counts(verdicts, counts):
    got = step_counts([{"verdict": v, "reason": ""} for v in verdicts])
    assert (got["steps_wrong"], got["steps_verifiable"], got["steps_timed_out"]) == counts


def test_score_record_counts_the_shown_steps():
    r = score_record(Problem(id="p", question="q", answer="15"),
                     "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 15\nStep 3: We are done.\nThe answer is 15.")
    assert [c["verdict"] for c in r.step_checks][:3] == ["correct", "incorrect", "unverifiable"]
    assert (r.steps_wrong, r.steps_verifiable, r.steps_timed_out) == (1, 2, 0)
    assert record_step_counts(r.to_dict()) == (1, 2, 0)


@pytest.mark.parametrize(
    ("counts", "rate"),
    [
        # pooled 3 / 8; the mean of per-problem rates would be (1 + 0 + 0.5) / 3 = 0.5
        ([(1, 1), (0, 3), (2, 4)], 3 / 8),
        # a problem without verifiable steps adds nothing (and does not divide by zero)
        ([(1, 4), (0, 0), (2, 6)], 3 / 10),
        ([(0, 5), (0, 1)], 0.0),
        ([(0, 0), (0, 0)], None),
    ],
)
def test_pooled_rate_of_hand_counted_problems(counts, rate):
    s = summarize([_record(str(i), w, v) for i, (w, v) in enumerate(counts)])
    e = s["step_errors"]
    assert e["rate"] == (pytest.approx(rate) if rate is not None else None)
    assert (e["wrong"], e["verifiable"], e["problems"]) == (sum(w for w, _ in counts), sum(v for _, v in counts),
                                                            len(counts))
    assert s["verifier_timeouts"] == 0
    if rate is None:
        assert e["ci95"] is None
    else:
        lo, hi = e["ci95"]
        assert lo <= rate <= hi


def test_interval_is_deterministic_and_a_ratio_estimator():
    ids = [str(i) for i in range(30)]
    counts = [(i % 3, 2 + i % 5) for i in range(30)]
    a, b = step_error_rate(ids, counts), step_error_rate(ids, counts)
    assert a == b and a["seed"] == 0 and a["resamples"] == 2000
    lo, hi = a["ci95"]
    assert 0 < lo < a["rate"] < hi < 1
    assert step_error_rate(ids, counts, seed=1)["ci95"] != a["ci95"]  # the seed is what fixes it
    # the interval is the shared cluster bootstrap of the pooled ratio (sum wrong / sum verifiable per resample)
    assert bootstrap_ci(ids, counts, pooled_ratio, resamples=2000) == a["ci95"]
    means = bootstrap_ci(ids, counts, lambda xs: sum(w / v for w, v in xs) / len(xs), resamples=2000)
    assert means != a["ci95"]


def test_heavy_problem_weighs_more_in_the_interval():
    """One problem with many verifiable steps, all wrong: the pooled rate (and its interval) follow it."""
    ids = ["big", "a", "b", "c"]
    counts = [(10, 10), (0, 1), (0, 1), (0, 1)]
    e = step_error_rate(ids, counts)
    assert e["rate"] == pytest.approx(10 / 13)  # the mean of per-problem rates would be 1/4
    # P(no "big" among 4 draws) = 31.6% > 2.5%: the lower end is 0. P(at least 3 "big") = 13/256 = 5.1% > 2.5%
    # but P(4) = 1/256 < 2.5%: the upper end is 3 big + 1 small, pooled 30/31 (a mean of rates would give 3/4).
    assert e["ci95"] == [pytest.approx(0.0), pytest.approx(30 / 31)]


def test_old_records_without_counts_load():
    old = [SimpleNamespace(id="1", steps=[{}], correct_strict=True, correct_flexible=True, pred_strict="1"),
           SimpleNamespace(id="2", steps=[], correct_strict=False, correct_flexible=True, pred_strict=None)]
    s = summarize(old)
    assert s["step_errors"] is None and s["verifier_timeouts"] is None
    assert s["strict"]["correct"] == 1 and s["flexible"]["accuracy"] == 1.0
    assert record_step_counts({"id": "1", "correct_strict": True}) is None


def test_paired_bootstrap_p_value_and_interval():
    diff = paired_bootstrap(list("abcd"), [-1.0, -2.0, 0.0, -1.0], lambda xs: sum(xs) / len(xs), resamples=2000)
    assert diff["ci95"][1] < 0 and diff["resamples_used"] == 2000
    # d >= 0 only when every draw is "c": (1/4)^4 of resamples; the p-value is twice that share
    assert diff["p_bootstrap"] == pytest.approx(2 / 256, abs=0.006)
    same = paired_bootstrap(list("abc"), [0.0, 0.0, 0.0], lambda xs: sum(xs), resamples=100)
    assert same == {"ci95": [0.0, 0.0], "p_bootstrap": 1.0, "resamples_used": 100}


# ------------------------------------------------------------------ verifier timeouts


def _no_budget(_units):
    """A budget spent before the check starts: every check runs out of work."""
    return Budget(0)


def test_ordinary_check_is_unchanged():
    c = check_step("3 + 4 = 7")
    assert (c.verdict, c.reason) == ("correct", "1 claim(s) hold") and not is_timeout(c)
    c = check_step("no numbers here")
    assert (c.verdict, c.reason) == ("unverifiable", "no arithmetic claim found") and not is_timeout(c.to_dict())


def test_a_timeout_is_flagged_and_counted(monkeypatch):
    monkeypatch.setattr(verify, "Budget", _no_budget)
    c = check_step("3 + 4 = 7")
    assert (c.verdict, c.reason) == ("unverifiable", TIMEOUT_REASON) and is_timeout(c) and is_timeout(c.to_dict())
    slow = score_record(Problem(id="p", question="q", answer="15"), "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 15")
    assert (slow.steps_wrong, slow.steps_verifiable, slow.steps_timed_out) == (0, 0, 2)
    monkeypatch.undo()
    fine = score_record(Problem(id="q", question="q", answer="15"), "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 15")
    s = summarize([slow, fine])
    assert s["verifier_timeouts"] == 2
    assert (s["step_errors"]["wrong"], s["step_errors"]["verifiable"]) == (1, 2)  # only the decided steps count


def test_the_budget_is_work_not_time(monkeypatch):
    """A clock that jumps an hour per reading changes nothing: a loaded machine cannot turn a
    checkable step unverifiable (it once did, with a wall-clock budget, in CI)."""
    hours = iter(range(0, 10**9, 3600))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(hours)))
    monkeypatch.setattr(time, "thread_time", lambda: float(next(hours)))
    assert check_step("(59.68)-((1250)*(0.06)) = -15.320000").verdict == "correct"


def test_the_budget_is_the_same_on_every_call():
    """Just enough work decides the step, one unit less does not, every time."""
    text = "She pays 3 * (4 + 5) = 27 dollars, then 27 - 2 = 25 are left."
    need = next(n for n in range(1, 200) if check_step(text, limits=Limits(max_work=n)).verdict == "correct")
    for _ in range(3):
        assert check_step(text, limits=Limits(max_work=need)).verdict == "correct"
        short = check_step(text, limits=Limits(max_work=need - 1))
        assert (short.verdict, short.reason) == ("unverifiable", TIMEOUT_REASON) and is_timeout(short)
    assert need < Limits().max_work // 100


# ------------------------------------------------------------------ degeneration: repeated steps, no answer


def test_repeated_steps_and_missing_answers_are_counted():
    p = Problem(id="p", question="q", answer="14")
    looping = score_record(p, "Step 1: 3 + 4 = 7\nStep 2: 3 + 4 = 7\nStep 3: 7 * 2 = 14\nThe answer is 14.")
    fresh = score_record(p, "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14\nThe answer is 14.")
    silent = score_record(p, "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14")
    assert [repeats_a_step(r) for r in (looping, fresh, silent)] == [True, False, False]
    assert repeats_a_step(looping.to_dict())  # a samples.jsonl line reads the same
    s = summarize([looping, fresh, silent])
    assert (s["repeats"]["count"], s["repeats"]["share"]) == (1, pytest.approx(1 / 3))
    assert s["no_answer"]["count"] == 1 and silent.pred_strict is None
    lo, hi = s["repeats"]["ci95"]
    assert 0 < lo < 1 / 3 < hi < 1


def test_a_repeat_is_the_same_body_under_any_marker():
    same = [{"text": "Step 1: 3 + 4 = 7"}, {"text": "**Step 4:**  3 + 4 = 7 "}]
    near = [{"text": "Step 1: 3 + 4 = 7"}, {"text": "Step 2: 3 + 4 = 7."}]
    assert repeats_a_step({"steps": same}) and not repeats_a_step({"steps": near})
    assert not repeats_a_step({"steps": [{"text": "Step 1:"}, {"text": "Step 2:"}]})  # empty bodies are no repeat
    assert not repeats_a_step({})
