"""The collapse guard decides on real outcomes: the kept evaluations of the evidence runs (docs/results/)."""

import json
from pathlib import Path

import pytest

from presrm.guard import decide, describe

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
M1 = RESULTS / "evidence_amx" / "init" / "eval_samples.jsonl"  # the M1 every evidence arm started from


def _records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("iteration", [0, 1])
def test_the_collapsed_pointwise_arm_is_stopped(iteration):
    """Arm (b), the chance-level P(Yes) judge: M2 and M3 repeat steps far more often than M1 (12.7% -> 76.0% on
    the 300 problems M2 was evaluated on) and stop giving answers; the guard does not promote either."""
    after = _records(RESULTS / "evidence_ablation_pointwise" / f"iter_{iteration}" / "eval_samples.jsonl")
    verdict = decide(_records(M1), after)
    assert not verdict["promote"] and {"repeats", "no_answer"} <= set(verdict["worse"])
    assert verdict["n"] == len(after)
    assert describe(verdict).startswith(f"worse on {len(after)} dev problems: ")


@pytest.mark.parametrize("iteration", [0, 1])
def test_the_likelihood_arm_is_promoted(iteration):
    """Approach 4, the likelihood judge: M2 and M3 lower the step error rate and repeat no more than M1."""
    after = _records(RESULTS / "evidence_norepeat" / f"iter_{iteration}" / "eval_samples.jsonl")
    verdict = decide(_records(M1), after)
    assert verdict["promote"] and verdict["worse"] == []
    assert verdict["signals"]["step_errors"]["difference"] < 0


def test_each_signal_alone_stops_a_model():
    """A model worse on one signal only is not promoted; better on all three, it is; within the noise, too."""
    def rec(wrong=0, repeat=False, answer="1"):
        steps = [{"text": "Step 1: 1 + 1 = 2"}, {"text": "Step 2: 1 + 1 = 2" if repeat else "Step 2: 2 + 1 = 3"}]
        return {"steps_wrong": wrong, "steps_verifiable": 2, "steps_timed_out": 0, "pred_strict": answer,
                "steps": steps}

    ids = [f"p{i}" for i in range(40)]
    base = {i: rec() for i in ids}
    for signal, bad in (("step_errors", rec(wrong=2)), ("repeats", rec(repeat=True)),
                        ("no_answer", rec(answer=None))):
        verdict = decide(base, {i: bad for i in ids})
        assert verdict["worse"] == [signal] and not verdict["promote"], signal
        assert decide({i: bad for i in ids}, base)["promote"], signal  # the other way round is better
    few = {i: (rec(repeat=True) if i in ("p0", "p1") else rec()) for i in ids}  # 2 of 40: inside the noise
    assert decide(base, few)["promote"]


def test_no_common_problem_is_an_error():
    with pytest.raises(ValueError, match="share no problem"):
        decide({"a": {}}, {"b": {}})
