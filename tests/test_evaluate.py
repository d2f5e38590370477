import pytest

from presrm.data import load_problems, load_task
from presrm.evaluate import evaluate, score_record, summarize, wilson_interval, write_eval
from presrm.jsonio import read_json, read_jsonl
from presrm.judge import PointwiseJudge
from presrm.schema import Problem


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 0, 0.0, 1.0), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (1, 50, 0.0035, 0.1050)],
)
def test_wilson_interval(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert (a, b) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))


@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        ("Step 1: 3 + 4 = 7\nStep 2: The answer is 7.", True, True),
        ("Step 1: 3 + 4 = 7 apples", False, True),
        ("Step 1: 3 + 4 = 8\nThe answer is 8.", False, False),
        ("I do not know", False, False),
    ],
)
def test_score_record(completion, strict, flexible):
    r = score_record(Problem(id="p", question="q", answer="7"), completion)
    assert (r.correct_strict, r.correct_flexible) == (strict, flexible)
    assert len(r.step_checks) == len(r.steps) >= (0 if completion == "I do not know" else 1)


def test_wrong_arithmetic_is_marked():
    r = score_record(Problem(id="p", question="q", answer="8"), "Step 1: 3 + 4 = 8\nThe answer is 8.")
    assert r.correct_strict and r.step_checks[0]["verdict"] == "incorrect"


def test_evaluate_writes_recomputable_results(tiny, gsm8k_like, tmp_path):
    model, tok = tiny
    task = load_task("gsm8k")
    problems = load_problems(task, data_file=str(gsm8k_like))
    summary, records = evaluate(model, tok, task, problems, max_new_tokens=8, batch_size=4,
                                judge=PointwiseJudge(model, tok))
    write_eval(tmp_path, summary, records)
    res, samples = read_json(tmp_path / "results.json"), read_jsonl(tmp_path / "samples.jsonl")
    assert res["n"] == len(samples) == len(problems)
    assert res["protocol"]["task"] == "gsm8k" and res["protocol"]["decoding"] == "greedy"
    for s in samples:
        assert s["completion"].startswith("Step 1:")
        assert len(s["step_scores"]) == len(s["steps"])
    from presrm.verify import answers_match

    recomputed = sum(s["pred_strict"] is not None and answers_match(s["pred_strict"], s["gold"]) for s in samples)
    assert recomputed == res["strict"]["correct"]


def test_summarize_counts():
    recs = [score_record(Problem(id=str(i), question="q", answer="7"), c)
            for i, c in enumerate(["The answer is 7.", "The answer is 6.", "so 7"])]
    s = summarize(recs)
    assert (s["n"], s["strict"]["correct"], s["flexible"]["correct"]) == (3, 1, 2)
