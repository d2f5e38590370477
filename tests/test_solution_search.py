"""search.granularity: solution, the paper's baseline (Self-Rewarding LMs): k whole solutions per problem, scored
by the run's judge (a solution judge, or a step judge aggregated with judge.aggregate), best vs worst a pair.

Scripted samplers and judges check the decision logic (ranking, ties, grounding, records in step search's
shape); the tiny model runs the loop end to end with it, through resume, the report and the pair cap."""

import pytest

from presrm.config import SearchConfig, load_config
from presrm.data import load_task
from presrm.engines import HFEngine
from presrm.errors import ConfigError
from presrm.judges.common import ScoreJudgeBase
from presrm.schema import Problem
from presrm.search import (
    ANSWER_WRONG,
    FEW_SCORED,
    FLAG_SOLUTION_REJECTED_RIGHT,
    SOLUTION_TIE,
    SOLUTION_WRONG,
    search_stats,
    solution_search,
    solution_steps,
)

TASK = load_task("gsm8k_train")


class StepScores(ScoreJudgeBase):
    """A step judge: the score after 'q=' in the step (0.5 without one)."""

    mode, unit = "pointwise", "step"

    def score(self, items, *, desc=None):
        import re

        return [float(m.group(1)) if (m := re.search(r"q=([0-9.]+)", it.step)) else 0.5 for it in items]


class SolutionScores(ScoreJudgeBase):
    """A solution judge: the score after 'Q=' anywhere in the solution (None without one: unreadable)."""

    mode, unit = "outcome", "solution"

    def score(self, items, *, desc=None):
        import re

        return [float(m.group(1)) if (m := re.search(r"Q=([0-9.]+)", it.solution)) else None for it in items]


def _sampler(solutions):
    calls = []

    def sample(prompts, seed):
        calls.append((len(prompts), seed))
        assert all(p.endswith("Step 1:") for p in prompts)
        return [list(solutions) for _ in prompts]
    sample.calls = calls
    return sample


def _run(tiny, judge, solutions, cfg=None, answer="7"):
    cfg = cfg or SearchConfig(k=4, max_steps=6)
    problems = [Problem(id="p0", question="Tom has 3 apples and buys 4. How many?", answer=answer)]
    return solution_search(HFEngine(*tiny), judge, TASK, problems, cfg, sampler=_sampler(solutions))


def test_solution_steps_stop_at_the_answer_and_the_cap():
    raw = " 3 + 4 = 7\nStep 2: 7 * 1 = 7\nStep 3: The answer is 7.\nStep 4: chatter"
    assert solution_steps(raw, 8) == ["Step 1: 3 + 4 = 7", "Step 2: 7 * 1 = 7", "Step 3: The answer is 7."]
    assert solution_steps(raw, 2) == ["Step 1: 3 + 4 = 7", "Step 2: 7 * 1 = 7"]
    assert solution_steps("", 4) == []


def test_step_judge_aggregated_picks_best_and_worst(tiny):
    """min over the steps: the solution whose weakest step is strongest is chosen."""
    sols = [" 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.8",       # min 0.8: chosen
            " 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.2",       # min 0.2
            " 3 + 4 = 8 q=0.1\nStep 2: The answer is 8. q=0.9",       # min 0.1: rejected
            " 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.8"]       # a duplicate: dropped before judging
    records, pairs = _run(tiny, StepScores(), sols)
    (rec,), (pair,) = records, pairs
    entry = rec["search"][0]
    assert len(entry["candidates"]) == 3 and (entry["chosen"], entry["rejected"]) == (0, 2)
    assert [c["score"] for c in entry["candidates"]] == [0.8, 0.2, 0.1]
    assert [c["verdict"] for c in entry["candidates"]] == ["correct", "correct", "incorrect"]
    assert pair.chosen == "Step 1: 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.8\n"
    assert pair.rejected.startswith("Step 1: 3 + 4 = 8") and not pair.prompt.endswith("Step 1:")
    assert pair.meta["granularity"] == "solution" and pair.meta["chosen_verdict"] == "correct"
    assert rec["correct"] and rec["finished"] and rec["steps"] == pair.chosen.strip().split("\n")
    assert rec["process_reward"] == 0.8
    stats = search_stats(records, pairs)
    assert stats["pairs"] == 1 and stats["judge_verifier"]["within_step_agreement"] == 1.0


@pytest.mark.parametrize(("sols", "answer", "reason", "flag"), [
    ([" Q=0.5 The answer is 7.", " Q=0.5 The answer is 8."], "7", SOLUTION_TIE, None),
    # grounding is step search's: a wrong answer alone is no reason to drop (the gold answer decides only with
    # require_correct_answer), a rejected solution that is right is flagged
    ([" Q=0.9 The answer is 8.", " Q=0.1 The answer is 7."], "7", None, FLAG_SOLUTION_REJECTED_RIGHT),
    ([" 3 + 4 = 9 Q=0.9\nStep 2: The answer is 7.", " Q=0.1 The answer is 7."], "7", SOLUTION_WRONG, None),
    ([" Q=0.9 The answer is 7.", " no score here"], "7", FEW_SCORED, None),  # unreadable scores are left out
    ([" I think so. Q=0.9", " Q=0.1 The answer is 7."], "7", None, FLAG_SOLUTION_REJECTED_RIGHT),
])
def test_outcome_judge_decisions(tiny, sols, answer, reason, flag):
    records, pairs = _run(tiny, SolutionScores(), sols, answer=answer)
    entry = records[0]["search"][0]
    assert entry["dropped"] == reason and entry.get("flag") == flag
    assert len(pairs) == (reason is None) == entry["pair"]


def test_require_correct_answer(tiny):
    sols = [" I think so. Q=0.9", " Q=0.1 The answer is 7."]  # the chosen is unverifiable: no right answer
    cfg = SearchConfig(k=2, max_steps=4, require_correct_answer=True)
    records, pairs = _run(tiny, SolutionScores(), sols, cfg=cfg)
    assert not pairs and records[0]["search"][0]["dropped"] == ANSWER_WRONG
    assert search_stats(records, pairs)["no_pair_reasons"] == {ANSWER_WRONG: 1}


def test_require_correct_answer_drops_a_wrong_answer(tiny):
    sols = [" Q=0.9 The answer is 8.", " Q=0.1 The answer is 7."]
    records, pairs = _run(tiny, SolutionScores(), sols, cfg=SearchConfig(k=2, max_steps=4, require_correct_answer=True))
    assert not pairs and records[0]["search"][0]["dropped"] == ANSWER_WRONG


def test_grounding_off_keeps_a_wrong_chosen(tiny):
    sols = [" 3 + 4 = 9 Q=0.9\nStep 2: The answer is 7.", " Q=0.1 The answer is 7."]
    _, pairs = _run(tiny, SolutionScores(), sols, cfg=SearchConfig(k=2, max_steps=4, grounding=False))
    assert len(pairs) == 1 and pairs[0].meta["chosen_verdict"] == "incorrect"


def test_config_rules():
    load_config(None, ["search.granularity=solution", "judge.mode=outcome"])
    load_config(None, ["search.granularity=solution", "judge.mode=likelihood", "search.max_pairs=[10, 5]"])
    with pytest.raises(ConfigError, match="ranks whole solutions by a score"):
        load_config(None, ["search.granularity=solution", "judge.mode=pairwise"])
    with pytest.raises(ConfigError, match="judge.mode 'outcome' is not one of"):
        load_config(None, ["judge.mode=outcome"])  # step search cannot rank steps with a solution judge
    with pytest.raises(ConfigError, match="search.granularity must be step or solution"):
        load_config(None, ["search.granularity=token"])
    with pytest.raises(ConfigError, match="max_pairs"):
        load_config(None, ["search.max_pairs=0"])


def test_a_solution_level_run_on_the_tiny_model(tiny_model_dir, gsm8k_like, tmp_path):
    """The loop with search.granularity: solution on the tiny model (the real sampler, the likelihood judge):
    search, training on whole-solution pairs, the report; --resume redoes nothing; search.max_pairs caps."""
    from presrm.jsonio import read_json, read_jsonl
    from presrm.loop import run
    from presrm.report import write_report

    overrides = [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=sol", "device=cpu",
                 f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=3",
                 "search.k=4", "search.max_steps=3", "search.max_step_tokens=8", "search.temperature=1.0",
                 "search.deterministic=true", "search.granularity=solution", "search.grounding=false",
                 "search.max_pairs=2", "judge.mode=likelihood", "train.max_steps=1", "train.batch_size=2",
                 "train.lora_r=2", "train.lora_alpha=4", f"eval.data_file={gsm8k_like}", "eval.limit=1",
                 "eval.max_new_tokens=4", "eval.before=false"]
    cfg = load_config("configs/smoke.yaml", overrides)
    run(cfg)
    it = tmp_path / "sol" / "iter_0"
    pairs, samples, search = read_jsonl(it / "pairs.jsonl"), read_jsonl(it / "samples.jsonl"), read_json(
        it / "search.json")
    assert search["granularity"] == "solution" and len(samples) == 3
    assert 1 <= len(pairs) <= 2 and search["pairs"] == len(pairs)
    assert search["pairs_over_max_pairs"] == max(sum(r["pairs_kept"] for r in samples) - 2, 0)
    assert all(p["meta"]["granularity"] == "solution" and p["chosen"].startswith("Step 1:") for p in pairs)
    assert read_json(it / "train.json")["pairs"] == len(pairs)
    assert write_report(tmp_path / "sol").exists()
    before = sorted(p.stat().st_mtime_ns for p in it.iterdir() if p.is_file())
    run(cfg, resume=True)
    assert sorted(p.stat().st_mtime_ns for p in it.iterdir() if p.is_file()) == before
