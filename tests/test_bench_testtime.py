"""benchmarks/bench_testtime.py's rerankers and votes, on hand-made candidates."""

from types import SimpleNamespace

import pytest

from benchmarks.bench_testtime import reranked, rewards, voted_correct
from presrm.data import Match
from presrm.decoding import weighted_vote

TASK = SimpleNamespace(match=Match())


def _cand(answer, right):
    return SimpleNamespace(pred_strict=answer, correct_strict=right, pred_flexible=answer, correct_flexible=right)


# three candidates say 20 (wrong), two say 18 (right): maj@5 picks 20; the judge backs the 18s
CANDS = [_cand("20", False), _cand("18", True), _cand("20", False), _cand("$18.", True), _cand("20", False)]
SCORES = [[0.2, 0.3], [0.9, 0.8], [0.1], [0.7, 0.95], [0.3, 0.2]]


def test_majority_and_weighted_votes_differ_where_the_judge_disagrees_with_the_crowd():
    assert not voted_correct(CANDS, TASK, "strict")  # 20 has three votes
    w = rewards(SCORES, "min")
    assert w == pytest.approx([0.2, 0.8, 0.1, 0.7, 0.2])
    assert voted_correct(CANDS, TASK, "strict", w)  # 18 carries 1.5 against 20's 0.5
    assert not voted_correct(CANDS, TASK, "strict", [1.0, 0.1, 1.0, 0.1, 1.0])  # a judge that backs the 20s


def test_weighted_vote_skips_candidates_without_answer_or_weight():
    assert weighted_vote(["18", None, "20"], [0.4, 5.0, None], Match()) == "18"
    assert weighted_vote([None, "7"], [1.0, None], Match()) is None
    assert weighted_vote(["3", "4"], [0.5, 0.5], Match()) == "3"  # a tie: the first answer


def test_best_of_k_takes_the_highest_reward_and_puts_stepless_candidates_last():
    assert reranked(CANDS, SCORES, "min") == 1
    assert reranked(CANDS, SCORES, "last") == 3
    assert reranked(CANDS[:2], [[], [0.01]], "min") == 1  # no steps ranks below any reward
    assert reranked(CANDS[:2], [[0.5], [0.5]], "min") == 0  # a tie: the lower index
