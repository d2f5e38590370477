"""The random judge (a control for the "no judge" ablation arm): deterministic, uniform, order-free, never a model."""

import json

import pytest

from presrm.cli import main
from presrm.config import JudgeConfig, load_config
from presrm.engines import HFEngine
from presrm.errors import ConfigError
from presrm.judge import RandomJudge, StepToJudge, judge_class, make_judge, make_judge_from_config, step_modes
from presrm.search import step_search
from tests.test_search import TASK, ScriptedSampler, _problems

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
ITEMS = [StepToJudge(Q, (), "Step 1: 3 + 4 = 7"), StepToJudge(Q, (), "Step 1: 3 + 4 = 8"),
         StepToJudge(Q, ("Step 1: 3 + 4 = 7",), "Step 2: The answer is 7."),
         StepToJudge(Q, ("Step 1: 3 + 4 = 8",), "Step 2: The answer is 7."),
         StepToJudge("Another question?", (), "Step 1: 3 + 4 = 7")]


class NoModel:
    """An engine every call of which fails: the random judge must never reach it."""

    def __getattr__(self, name):
        raise AssertionError(f"the random judge used engine.{name}")


def test_scores_are_deterministic_uniform_and_differ_between_items():
    a = RandomJudge(NoModel(), seed=0).score(ITEMS)
    assert a == RandomJudge(NoModel(), seed=0).score(ITEMS)  # a rerun (a new judge) gives the same scores
    assert all(isinstance(x, float) and 0.0 <= x < 1.0 for x in a)
    assert len(set(a)) == len(ITEMS)  # the step, the previous steps and the question each change the score
    b = RandomJudge(NoModel(), seed=1).score(ITEMS)
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_a_score_depends_on_neither_batch_order_nor_batch_company():
    judge = RandomJudge(None, seed=7)
    alone = [judge.score([it])[0] for it in ITEMS]
    assert judge.score(ITEMS) == alone
    assert judge.score(ITEMS[::-1]) == alone[::-1]
    assert judge.score(ITEMS[2:3] * 3 + ITEMS[:1]) == [alone[2]] * 3 + [alone[0]]
    assert judge.score([]) == []


def test_scores_spread_over_the_unit_interval():
    scores = RandomJudge(None).score([StepToJudge(Q, (), f"Step 1: {i} + 1 = {i + 1}") for i in range(2000)])
    assert 0.45 < sum(scores) / len(scores) < 0.55
    counts = [sum(int(10 * s) == d for s in scores) for d in range(10)]
    assert min(counts) > 150 and max(counts) < 250  # ~200 in each tenth


def test_registry_and_builders():
    assert judge_class("random") is RandomJudge and "random" in step_modes()
    judge = make_judge("random", None, seed=3)
    assert (judge.mode, judge.unit, judge.seed) == ("random", "step", 3)
    built = make_judge_from_config(JudgeConfig(mode="random"), None, task="gsm8k", tasks_dir="elsewhere", seed=3)
    assert built.score(ITEMS) == judge.score(ITEMS)
    with pytest.raises(ConfigError, match="do not apply to mode 'random'"):
        make_judge("random", None, template="x.jinja")


def test_config_accepts_random_and_refuses_eft_with_it():
    assert load_config(None, ["judge.mode=random"]).judge.mode == "random"
    with pytest.raises(ConfigError, match="judge.mode random reads none"):
        load_config(None, ["judge.mode=random", "init.eft=true"])


def test_tournament_ranks_by_the_random_scores():
    judge = RandomJudge(None, seed=0)
    cands = ["Step 1: 3 + 4 = 7", "Step 1: 3 + 4 = 8", "Step 1: 4 + 3 = 7"]
    t = judge.tournament(Q, (), cands)
    scores = judge.score([StepToJudge(Q, (), c) for c in cands])
    assert t.scores == scores and t.score_kind == "random"
    assert t.wins == [float(sum(s > o for o in scores)) for s in scores]


def test_step_search_with_the_random_judge_makes_pairs_and_keeps_grounding(tiny):
    script = {1: [" 3 + 4 = 7", " 3 + 4 = 8", " 3 + 4 = 9", " so 7"], 2: [" The answer is 7.", " The answer is 8."]}

    def search(seed):
        sampler = ScriptedSampler(script)
        return step_search(HFEngine(*tiny), RandomJudge(None, seed=seed), TASK, _problems("7", "7"),
                           load_config(None, ["search.k=4", "search.max_steps=4"]).search, sampler=sampler)

    records, pairs = search(0)
    assert pairs and all(p.meta["chosen_wins"] > p.meta["rejected_wins"] for p in pairs)
    # verifier grounding is unchanged: no kept pair chooses a verifiably wrong step
    assert not [p for p in pairs if p.meta.get("chosen_verdict") == "incorrect"]
    entries = [e for r in records for e in r["search"] if len(e["candidates"]) > 1]
    assert entries and all(e["score_kind"] == "random" for e in entries)
    again_records, again = search(0)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in pairs] and again_records == records


def test_judge_eval_cli_random_is_a_control(tiny_model_dir, gsm8k_like, tmp_path):
    out = tmp_path / "je"
    assert main(["judge-eval", "--model", str(tiny_model_dir), "--judge", "random", "--data-file", str(gsm8k_like),
                 "--limit", "4", "--device", "cpu", "--precision", "fp32", "--seed", "5",
                 "--output-dir", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert res["protocol"]["mode"] == "random" and 0.0 <= res["step_auroc"]["value"] <= 1.0
    first = samples[0]
    texts = [s if isinstance(s, str) else s["text"] for s in first["steps"]]
    want = RandomJudge(None, seed=5).score([StepToJudge(first["question"], tuple(texts[:i]), t)
                                            for i, t in enumerate(texts)])
    assert first["step_scores"] == want
