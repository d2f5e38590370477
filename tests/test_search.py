"""Step search: scripted sampler + scripted judges for the decision logic, the tiny model for the real path."""

import re

import pytest

from presrm.config import SearchConfig
from presrm.data import load_problems, load_task
from presrm.engines import HFEngine
from presrm.judge import PointwiseJudge, Tournament, rank_tournament
from presrm.judges.common import ScoreJudgeBase
from presrm.schema import Problem
from presrm.search import (
    ALL_REPEAT,
    ALL_TIE,
    ANSWER_WRONG,
    CHOSEN_WRONG,
    FLAG_REJECTED_RIGHT,
    ROLLED_BACK,
    search_stats,
    step_candidates,
    step_search,
)

TASK = load_task("gsm8k_train")


class FakePairwiseJudge:
    """Deterministic pairwise judge: the candidate with the higher ``rank(text)`` wins; equal ranks tie."""

    mode = "pairwise"

    def __init__(self, rank):
        self.rank, self.calls = rank, []

    def tournaments(self, groups, *, desc=None):
        self.calls.append(len(groups))
        out = []
        for _, _, cands in groups:
            wins, matches = [0.0] * len(cands), []
            for i in range(len(cands)):
                for j in range(i + 1, len(cands)):
                    ri, rj = self.rank(cands[i]), self.rank(cands[j])
                    w = "A" if ri > rj else "B" if rj > ri else "tie"
                    wins[i] += 1.0 if w == "A" else 0.5 if w == "tie" else 0.0
                    wins[j] += 1.0 if w == "B" else 0.5 if w == "tie" else 0.0
                    matches.append({"i": i, "j": j, "winner": w, "p_a": {"A": 0.9, "B": 0.1, "tie": 0.5}[w]})
            out.append(Tournament(wins=wins, matches=matches, scores=[w / (len(cands) - 1) for w in wins]))
        return out


class FakePointwiseJudge(ScoreJudgeBase):
    """Scores from a table; its tournaments are the shared ranking ones of every score judge."""

    mode = "pointwise"

    def __init__(self, score):
        self.score_of = score

    def score(self, items, *, desc=None):
        return [self.score_of(it.step) for it in items]


def _digits(text):
    """Rank used by the fake judges: the letter after 'rank' in the step ('ranka' = 0; 0 when absent)."""
    m = re.search(r"rank([a-j])\b", text)
    return "abcdefghij".index(m.group(1)) if m else 0


class ScriptedSampler:
    """Returns ``script[(step n, how many times step n was asked for)]``, else ``script[n]``; records calls."""

    def __init__(self, script):
        self.script, self.calls, self.seen = script, [], {}

    def __call__(self, prompts, seed):
        self.calls.append((len(prompts), seed))
        out = []
        for p in prompts:
            n = int(re.search(r"Step (\d+):$", p).group(1))
            self.seen[n] = self.seen.get(n, 0) + 1
            out.append(self.script.get((n, self.seen[n]), self.script.get(n, [])))
        return out


def _problems(*answers):
    return [Problem(id=f"p{i}", question=f"Question {i}?", answer=a) for i, a in enumerate(answers)]


def _search(tiny, sampler, judge, cfg=None, problems=None):
    cfg = cfg or SearchConfig(k=3, max_steps=6)
    return step_search(HFEngine(*tiny), judge, TASK, problems or _problems("7"), cfg, sampler=sampler)


@pytest.mark.parametrize(("raw", "n", "expected"), [
    ([" a", "a ", "", "  ", "b"], 2, ["Step 2: a", "Step 2: b"]),
    ([" 3 + 4 = 7. Step 3: 7 * 2 = 14", " 3 + 4 = 7."], 2, ["Step 2: 3 + 4 = 7."]),
    ([" x Step 2: y"], 2, ["Step 2: x Step 2: y"]),  # only the *next* step's marker cuts
    ([" Step 2: only a marker"], 1, []),
    ([], 1, []),
    ([" So x = 4 ", "So x = 4", " Step 3: y"], None, ["So x = 4", "Step 3: y"]),  # no step number: plain lines
])
def test_candidates(raw, n, expected):
    assert step_candidates(raw, n) == expected


@pytest.mark.parametrize(("scores", "wins", "winners"), [
    ([0.2, 0.9, 0.2], [0.5, 2.0, 0.5], ["B", "tie", "A"]),
    ([0.5, 0.5], [0.5, 0.5], ["tie"]),
    ([0.1, 0.2, 0.3], [0.0, 1.0, 2.0], ["B", "B", "B"]),
])
def test_rank_tournament(scores, wins, winners):
    t = rank_tournament(scores)
    assert t.wins == wins and [m["winner"] for m in t.matches] == winners and t.scores == scores
    assert [(m["i"], m["j"]) for m in t.matches] == [(i, j) for i in range(len(scores))
                                                      for j in range(i + 1, len(scores))]


def test_most_wins_chosen_fewest_rejected_and_everything_recorded(tiny):
    sampler = ScriptedSampler({1: [" rankc 3 + 4 = 7", " rankb 3 + 4 = 7", " rankd 3 + 4 = 7"],
                               2: [" rankb The answer is 7.", " rankf The answer is 7."]})
    records, pairs = _search(tiny, sampler, FakePairwiseJudge(_digits))
    rec = records[0]
    assert rec["steps"] == ["Step 1: rankd 3 + 4 = 7", "Step 2: rankf The answer is 7."]
    assert rec["finished"] and rec["end"] == "final answer" and rec["correct"] and rec["pred"] == "7"
    first = rec["search"][0]
    assert [c["wins"] for c in first["candidates"]] == [1.0, 0.0, 2.0]
    assert (first["chosen"], first["rejected"], first["action"]) == (2, 1, "append")
    assert len(first["matches"]) == 3 and all(c["verdict"] == "correct" for c in first["candidates"])
    assert [c["score"] for c in first["candidates"]] == [0.5, 0.0, 1.0]  # win rates
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("Step 1: rankd 3 + 4 = 7\n", "Step 1: rankb 3 + 4 = 7\n"),
        ("Step 2: rankf The answer is 7.\n", "Step 2: rankb The answer is 7.\n")]
    second = pairs[1]
    assert second.meta["previous_steps"] == ["Step 1: rankd 3 + 4 = 7"] and second.meta["step"] == 2
    assert second.prompt.endswith("Step 1: rankd 3 + 4 = 7\n") and second.prompt.startswith(pairs[0].prompt)


@pytest.mark.parametrize(("rollback_pairs", "pair_steps", "reasons"), [
    ("keep", [1, 1, 2], {ALL_TIE: 1}),             # its tournament still said rankc > rankb: the pair stays
    ("drop", [1, 2], {ALL_TIE: 1, ROLLED_BACK: 1}),  # the rollback withdraws the pair that chose rankc
])
def test_all_tie_rolls_back_one_step_and_resamples(tiny, rollback_pairs, pair_steps, reasons):
    script = {1: [" rankc a", " rankb b"],
              (2, 1): [" rankb tie", " rankb tie too"],       # all tie: roll step 1 back
              (1, 2): [" ranke c", " ranka d", " rankb e"],    # step 1 re-sampled
              2: [" rankj The answer is 7.", " ranka The answer is 8."]}
    cfg = SearchConfig(k=3, max_steps=6, rollback_pairs=rollback_pairs)
    records, pairs = _search(tiny, ScriptedSampler(script), FakePairwiseJudge(_digits), cfg)
    rec = records[0]
    assert [e["action"] for e in rec["search"]] == ["append", "rollback", "append", "append"]
    rb = rec["search"][1]
    assert rb["dropped"] == ALL_TIE and rb["popped"] == "Step 1: rankc a" and rb["step"] == 2
    assert rb["withdrawn_pair"] is (rollback_pairs == "drop")
    assert rec["search"][0]["pair"] is (rollback_pairs == "keep")
    assert rec["steps"] == ["Step 1: ranke c", "Step 2: rankj The answer is 7."]
    assert rec["rollbacks"] == 1 and rec["rounds"] == 4
    assert [p.meta["step"] for p in pairs] == pair_steps
    assert any(p.chosen.startswith("Step 1: rankc") for p in pairs) is (rollback_pairs == "keep")
    stats = search_stats(records, pairs)
    assert stats["no_pair_reasons"] == reasons and stats["pairs"] == len(pair_steps)


def test_rollback_pairs_setting_is_checked():
    from presrm.config import load_config
    from presrm.errors import ConfigError

    assert load_config(None).search.rollback_pairs == "keep"
    with pytest.raises(ConfigError, match="search.rollback_pairs must be keep or drop"):
        load_config(None, ["search.rollback_pairs=maybe"])


def test_all_tie_at_first_step_and_cap_counts_rounds(tiny):
    cfg = SearchConfig(k=2, max_steps=5)
    records, pairs = _search(tiny, ScriptedSampler({1: [" x", " y"]}), FakePairwiseJudge(lambda t: 0), cfg)
    rec = records[0]
    assert rec["end"] == "cap" and rec["rounds"] == 5 and rec["rollbacks"] == 5 and not rec["steps"]
    assert all(e["popped"] is None for e in rec["search"]) and pairs == []
    assert search_stats(records, pairs)["capped"] == 1


def test_single_or_no_candidate(tiny):
    script = {1: [" same", " same "], 2: ["", "  "]}
    records, pairs = _search(tiny, ScriptedSampler(script), FakePairwiseJudge(_digits))
    rec = records[0]
    assert rec["steps"] == ["Step 1: same"] and rec["end"] == "model stopped" and not rec["finished"]
    assert [e["dropped"] for e in rec["search"]] == ["fewer than two distinct candidates", "no candidate"]
    assert pairs == []
    # nothing judged the lone candidate: no invented score, and no process reward from nothing
    assert rec["step_scores"] == [None] and rec["process_reward"] is None
    assert rec["search"][0]["candidates"][0]["score"] is None


@pytest.mark.parametrize(("judge_scores", "step_scores", "reward"), [
    ({"Step 1: 3 + 4 = 7": 0.9, "Step 1: 3 + 4 = 8": 0.2}, [0.9, None, 0.4], 0.4),  # min over judged steps
    ({"Step 1: 3 + 4 = 7": 0.3, "Step 1: 3 + 4 = 8": 0.2}, [0.3, None, 0.4], 0.3),
])
def test_unjudged_steps_score_none_and_rewards_aggregate_judged_steps(tiny, judge_scores, step_scores, reward):
    script = {1: [" 3 + 4 = 7", " 3 + 4 = 8"], 2: [" only one way on"],
              3: [" The answer is 7.", " The answer is 8."]}
    scores = {**judge_scores, "Step 3: The answer is 7.": 0.4, "Step 3: The answer is 8.": 0.1}
    records, _ = _search(tiny, ScriptedSampler(script), FakePointwiseJudge(scores.get))
    assert records[0]["step_scores"] == step_scores and records[0]["process_reward"] == reward


@pytest.mark.parametrize(("grounding", "kept", "flags"), [(True, 1, [FLAG_REJECTED_RIGHT]), (False, 2, [None, None])])
def test_grounding_drops_wrong_chosen_and_flags_right_rejected(tiny, grounding, kept, flags):
    script = {1: [" rankj 3 + 4 = 8", " rankb 3 + 4 = 7"],          # chosen verifiably wrong
              2: [" rankj so we go on", " rankb 8 * 2 = 16"],       # chosen unverifiable, rejected right
              3: [" rankj The answer is 16.", " rankj The answer is 16!", " rankb x"]}
    cfg = SearchConfig(k=3, max_steps=6, grounding=grounding)
    records, pairs = _search(tiny, ScriptedSampler(script), FakePairwiseJudge(_digits), cfg)
    rec = records[0]
    assert rec["steps"][0] == "Step 1: rankj 3 + 4 = 8"  # grounding never changes the search path
    assert rec["search"][0]["dropped"] == (CHOSEN_WRONG if grounding else None)
    assert [p.meta["flag"] for p in pairs if p.meta["step"] < 3] == flags
    assert len([p for p in pairs if p.meta["step"] < 3]) == kept
    stats = search_stats(records, pairs)
    assert stats["judge_verifier"]["chosen_incorrect"] == 1
    assert stats["judge_verifier"]["chosen_incorrect_with_correct_alternative"] == 1
    assert stats["judge_verifier"]["match_agreement"] == 0.0  # the judge picked 3+4=8 over 3+4=7


@pytest.mark.parametrize(("gold", "require", "n_pairs"), [("7", True, 1), ("8", True, 0), ("8", False, 1)])
def test_require_correct_answer(tiny, gold, require, n_pairs):
    script = {1: [" rankc The answer is 7.", " rankb The answer is 9."]}
    cfg = SearchConfig(k=2, max_steps=3, require_correct_answer=require)
    records, pairs = _search(tiny, ScriptedSampler(script), FakePairwiseJudge(_digits), cfg, _problems(gold))
    assert len(pairs) == n_pairs and records[0]["pairs_kept"] == n_pairs
    reasons = search_stats(records, pairs)["no_pair_reasons"]
    assert reasons == ({ANSWER_WRONG: 1} if n_pairs == 0 else {})


def test_batched_one_generate_and_one_tournament_call_per_round(tiny):
    script = {1: [" rankb a", " rankc b"], 2: [" rankb The answer is 1.", " rankc c"],
              3: [" rankd The answer is 2.", " rankb d"]}
    judge, sampler = FakePairwiseJudge(_digits), ScriptedSampler(script)
    records, _ = _search(tiny, sampler, judge, SearchConfig(k=2, max_steps=6), _problems("1", "2", "3"))
    # the fake judge prefers "c" at step 2 for everyone, so all three need 3 rounds
    assert [n for n, _ in sampler.calls] == [3, 3, 3] and judge.calls == [3, 3, 3]
    assert len({seed for _, seed in sampler.calls}) == 3
    assert all(len(r["steps"]) == 3 for r in records)


def test_pointwise_judge_ranks_by_score(tiny):
    script = {1: [" 3 + 4 = 7", " 3 + 4 = 8", " hmm"], 2: [" The answer is 7.", " The answer is 8."]}
    scores = {"Step 1: 3 + 4 = 7": 0.9, "Step 1: 3 + 4 = 8": 0.2, "Step 1: hmm": 0.5,
              "Step 2: The answer is 7.": 0.6, "Step 2: The answer is 8.": 0.4}
    records, pairs = _search(tiny, ScriptedSampler(script), FakePointwiseJudge(scores.get))
    first = records[0]["search"][0]
    assert [c["wins"] for c in first["candidates"]] == [2.0, 0.0, 1.0] and first["score_kind"] == "pointwise"
    assert records[0]["step_scores"] == [0.9, 0.6] and records[0]["process_reward"] == 0.6
    jv = search_stats(records, pairs)["judge_verifier"]
    assert jv["decided_candidates"] == 2 and jv["pointwise_agreement"] == 1.0
    assert jv["within_step_agreement"] == 1.0 and jv["match_agreement"] == 1.0


def test_search_stats_table():
    rec = {"steps": ["a", "b"], "finished": True, "correct": False, "end": "final answer", "rollbacks": 0,
           "search": [
               {"candidates": [{"score": 0.8, "wins": 1.0, "verdict": "correct"},
                               {"score": 0.3, "wins": 0.0, "verdict": "incorrect"},
                               {"score": 0.9, "wins": 2.0, "verdict": "unverifiable"}],
                "matches": [{"i": 0, "j": 1, "winner": "A"}, {"i": 0, "j": 2, "winner": "B"},
                            {"i": 1, "j": 2, "winner": "B"}],
                "score_kind": "pointwise", "action": "append", "chosen": 2, "dropped": None},
               {"candidates": [{"score": 0.6, "wins": 0.5, "verdict": "incorrect"},
                               {"score": 0.4, "wins": 0.5, "verdict": "correct"}],
                "matches": [{"i": 0, "j": 1, "winner": None}], "score_kind": "win_rate",
                "action": "rollback", "dropped": ALL_TIE},
           ]}
    s = search_stats([rec], [])
    jv = s["judge_verifier"]
    assert jv["decided_candidates"] == 4 and jv["pointwise_agreement"] == 1.0  # only the pointwise entry
    assert jv["right_vs_wrong_couples"] == 2 and jv["within_step_agreement"] == 0.75
    assert jv["right_vs_wrong_matches"] == 1 and jv["match_agreement"] == 1.0 and jv["unparsed_matches"] == 1
    assert s["no_pair_reasons"] == {ALL_TIE: 1}
    assert (s["problems"], s["finished"], s["mean_steps"], s["mean_steps_finished"]) == (1, 1, 2.0, 2.0)
    assert search_stats([], [])["judge_verifier"]["pointwise_agreement"] is None


def _run_tiny(tiny, gsm8k_like, seed=0, judge=None):
    model, tok = tiny
    problems = load_problems(TASK, limit=3, data_file=str(gsm8k_like))
    cfg = SearchConfig(k=3, max_steps=2, max_step_tokens=8, temperature=1.0, batch_size=8)
    engine = HFEngine(model, tok)
    return step_search(engine, judge or PointwiseJudge(engine), TASK, problems, cfg, seed=seed)


def test_step_search_on_tiny_model_builds_consistent_pairs(tiny, gsm8k_like):
    records, pairs = _run_tiny(tiny, gsm8k_like)
    assert len(records) == 3 and pairs
    for rec in records:
        assert rec["rounds"] <= 2 and len(rec["step_scores"]) == len(rec["steps"])
        steps: list[str] = []
        for entry in rec["search"]:
            assert entry["step"] == len(steps) + 1
            if entry["action"] == "rollback":
                steps = steps[:-1]
            elif entry["action"] == "append":
                chosen = entry["candidates"][entry["chosen"]]
                assert chosen["text"].startswith(f"Step {entry['step']}:")
                assert chosen["wins"] == max(c["wins"] for c in entry["candidates"])
                steps.append(chosen["text"])
        assert steps == rec["steps"]
    for p in pairs:
        d = p.to_dict()
        assert d["chosen"] != d["rejected"] and d["meta"]["chosen_wins"] > d["meta"]["rejected_wins"]
        assert d["prompt"].endswith("".join(s + "\n" for s in d["meta"]["previous_steps"]))


def test_real_pairwise_judge_on_tiny_model(tiny, gsm8k_like):
    from presrm.judge import PairwiseJudge

    records, pairs = _run_tiny(tiny, gsm8k_like, judge=PairwiseJudge(HFEngine(*tiny), both_orders=False,
                                                                     tie_margin=0))
    entries = [e for r in records for e in r["search"] if len(e["candidates"]) > 1]
    assert entries and all(e["score_kind"] == "win_rate" for e in entries) and pairs
    for e in entries:
        n = len(e["candidates"])
        assert len(e["matches"]) == n * (n - 1) // 2 and all(m["p_a"] is not None for m in e["matches"])
        assert sum(c["wins"] for c in e["candidates"]) == n * (n - 1) / 2
    assert all(p.meta["chosen_wins"] > p.meta["rejected_wins"] for p in pairs)


def test_same_seed_same_pairs_other_seed_differs(tiny, gsm8k_like):
    a = [p.to_dict() for p in _run_tiny(tiny, gsm8k_like, seed=3)[1]]
    b = [p.to_dict() for p in _run_tiny(tiny, gsm8k_like, seed=3)[1]]
    c = [p.to_dict() for p in _run_tiny(tiny, gsm8k_like, seed=4)[1]]
    assert a == b and a != c


@pytest.mark.parametrize("no_repeats", [False, True])
def test_no_repeats_never_chooses_a_repeated_step_and_rejects_it_first(tiny, no_repeats):
    # at step 2 the judge's favourite (rankj) repeats step 1 word for word; rankb is fresh and its least favourite
    script = {1: [" rankj 3 + 4 = 7", " rankc 3 + 4 = 7"],
              2: [" rankj 3 + 4 = 7", " rankb 7 * 2 = 14", " rankc 7 * 3 = 21"],
              3: [" rankj The answer is 7.", " rankb The answer is 8."]}
    cfg = SearchConfig(k=3, max_steps=6, no_repeats=no_repeats)
    records, pairs = _search(tiny, ScriptedSampler(script), FakePairwiseJudge(_digits), cfg)
    second = records[0]["search"][1]
    assert [c["wins"] for c in second["candidates"]] == [2.0, 0.0, 1.0]
    pair = next(p for p in pairs if p.meta["step"] == 2)
    if no_repeats:  # fresh steps rank above the repeat whatever their wins: rankc chosen, the repeat rejected
        assert records[0]["steps"][1] == "Step 2: rankc 7 * 3 = 21"
        assert (second["chosen"], second["rejected"]) == (2, 0) and second["candidates"][0]["repeat"] is True
        assert pair.rejected == "Step 2: rankj 3 + 4 = 7\n" and pair.meta["rejected_repeats"] is True
        assert pair.meta["chosen_wins"] < pair.meta["rejected_wins"]  # kept: fresh over repeat needs no margin
        assert search_stats(records, pairs)["repeat_rejected_pairs"] == 1
    else:  # the paper: the judge's favourite is chosen, repeat or not
        assert records[0]["steps"][1] == "Step 2: rankj 3 + 4 = 7"
        assert (second["chosen"], second["rejected"]) == (0, 1) and "repeat" not in second["candidates"][0]
        assert pair.meta["rejected_repeats"] is False


def test_no_repeats_drops_the_pair_when_every_candidate_repeats(tiny):
    script = {1: [" 3 + 4 = 7", " 4 + 4 = 8"], 2: [" 7 * 2 = 14", " 1 + 1 = 2"],
              3: [" 3 + 4 = 7", " 7 * 2 = 14"],  # both repeat an earlier step
              4: [" The answer is 14."]}
    scores = {"Step 1: 3 + 4 = 7": 0.9, "Step 1: 4 + 4 = 8": 0.1, "Step 2: 7 * 2 = 14": 0.8, "Step 2: 1 + 1 = 2": 0.2,
              "Step 3: 3 + 4 = 7": 0.6, "Step 3: 7 * 2 = 14": 0.7}
    cfg = SearchConfig(k=2, max_steps=6, no_repeats=True)
    records, pairs = _search(tiny, ScriptedSampler(script), FakePointwiseJudge(scores.get), cfg)
    third = records[0]["search"][2]
    assert third["dropped"] == ALL_REPEAT and not third["pair"] and all(c["repeat"] for c in third["candidates"])
    assert records[0]["steps"][2] == "Step 3: 7 * 2 = 14"  # the path goes on with the judge's favourite
    assert [p.meta["step"] for p in pairs] == [1, 2]
    assert search_stats(records, pairs)["no_pair_reasons"][ALL_REPEAT] == 1
