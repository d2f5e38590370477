from presrm.config import SearchConfig
from presrm.data import load_problems, load_task
from presrm.judge import PointwiseJudge
from presrm.search import ProblemState, _candidates, _decide, step_search


def _run(tiny, gsm8k_like, seed=0):
    model, tok = tiny
    task = load_task("gsm8k_train")
    problems = load_problems(task, limit=3, data_file=str(gsm8k_like))
    cfg = SearchConfig(num_problems=3, k=3, max_steps=2, max_step_tokens=10, temperature=1.0, batch_size=8)
    return step_search(model, tok, PointwiseJudge(model, tok), task, problems, cfg, seed=seed)


def test_step_search_builds_consistent_pairs(tiny, gsm8k_like):
    records, pairs = _run(tiny, gsm8k_like)
    assert len(records) == 3
    assert pairs, "random tiny model with k=3 should still yield pairs"
    for rec in records:
        assert 1 <= len(rec["steps"]) <= 2 and len(rec["step_scores"]) == len(rec["steps"])
        for n, entry in enumerate(rec["search"], start=1):
            assert entry["step"] == n
            chosen = entry["candidates"][entry["chosen"]]
            assert rec["steps"][n - 1] == chosen["text"] and chosen["text"].startswith(f"Step {n}:")
            assert chosen["score"] == max(c["score"] for c in entry["candidates"])
    for p in pairs:
        d = p.to_dict()
        assert d["chosen"] != d["rejected"]
        assert d["meta"]["chosen_score"] > d["meta"]["rejected_score"]
        assert d["chosen"].startswith(f"Step {d['meta']['step']}:")
        # the prompt is the exact policy prompt plus the previous chosen steps
        assert d["prompt"].endswith("".join(s + "\n" for s in d["meta"]["previous_steps"]))


def test_same_seed_same_pairs(tiny, gsm8k_like):
    a = [p.to_dict() for p in _run(tiny, gsm8k_like, seed=3)[1]]
    b = [p.to_dict() for p in _run(tiny, gsm8k_like, seed=3)[1]]
    assert a == b


def test_candidates_dedup_and_number():
    assert _candidates([" a", "a ", "", "  ", "b"], 2) == ["Step 2: a", "Step 2: b"]


def _state():
    from presrm.schema import Problem

    return ProblemState(Problem(id="p", question="q", answer="7"))


def test_decide_drops_pair_when_chosen_is_verifiably_wrong():
    cfg = SearchConfig()
    st = _state()
    pair = _decide(st, 1, ["Step 1: 3 + 4 = 8", "Step 1: 3 + 4 = 7"], [0.9, 0.1], cfg, 0, "P")
    assert pair is None and st.trace[-1]["dropped"].startswith("chosen step has verifiably wrong")
    assert st.steps == ["Step 1: 3 + 4 = 8"]  # the search still follows the judge
    off = _decide(_state(), 1, ["Step 1: 3 + 4 = 8", "Step 1: 3 + 4 = 7"], [0.9, 0.1],
                  SearchConfig(verifier_filter=False), 0, "P")
    assert off is not None and off.meta["chosen_verdict"] == "incorrect"


def test_decide_margin_single_candidate_and_finish():
    st = _state()
    assert _decide(st, 1, ["Step 1: a", "Step 1: b"], [0.5, 0.5], SearchConfig(), 0, "P") is None
    assert "margin" in st.trace[-1]["dropped"]
    assert _decide(st, 2, ["Step 2: c"], [0.4], SearchConfig(), 0, "P") is None
    assert st.trace[-1]["dropped"] == "fewer than two distinct candidates"
    pair = _decide(st, 3, ["Step 3: The answer is 7.", "Step 3: hmm"], [0.8, 0.2], SearchConfig(), 0, "P")
    assert pair is not None and pair.chosen == "Step 3: The answer is 7.\n" and st.finished
    rec = st.record("min")
    assert rec["pred"] == "7" and rec["correct"] and rec["process_reward"] == 0.4


def test_search_stats_agreement_and_reasons():
    from presrm.search import search_stats

    rec = {"steps": ["a", "b"], "finished": True, "correct": False, "search": [
        {"candidates": [{"score": 0.8, "verdict": "correct"}, {"score": 0.3, "verdict": "incorrect"},
                        {"score": 0.9, "verdict": "unverifiable"}], "dropped": None},
        {"candidates": [{"score": 0.6, "verdict": "incorrect"}, {"score": 0.4, "verdict": "correct"}],
         "dropped": "chosen step has verifiably wrong arithmetic"},
    ]}
    s = search_stats([rec], [])
    jv = s["judge_verifier"]
    assert jv["decided_candidates"] == 4 and jv["pointwise_agreement"] == 0.5
    assert jv["right_vs_wrong_couples"] == 2 and jv["within_step_agreement"] == 0.5
    assert s["no_pair_reasons"] == {"chosen step has verifiably wrong arithmetic": 1}
    assert (s["problems"], s["finished"], s["mean_steps"]) == (1, 1, 2.0)
    assert search_stats([], [])["judge_verifier"]["pointwise_agreement"] is None
