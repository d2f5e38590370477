"""One judge builder: the judge a run searches with is the judge its evaluations measure and the one the commands
build; the mode-specific facts (template keys, verdict words, probability scores, the per-step judge) live in the
judge registry alone."""

import argparse
import logging
import shutil
from pathlib import Path

import pytest

from presrm import loop
from presrm.cli import _eval_step_judge, main, make_parser
from presrm.config import JudgeConfig, load_config
from presrm.engines import HFEngine
from presrm.errors import ConfigError
from presrm.init_data import LabelledPair, eft_pointwise_examples, on_policy_examples
from presrm.jsonio import read_json, read_jsonl
from presrm.judge import PROMPTS, PointwiseJudge, StepToJudge, judge_config
from presrm.judge_eval import JudgeEvalArgs
from presrm.judges import registry
from presrm.judges.common import ScoreJudgeBase
from presrm.labelled import NaturalStep
from presrm.layout import RunLayout
from presrm.search import search_stats
from tests.test_loop import _cfg


def _template(tmp_path: Path, mode: str, lead: str) -> str:
    """A copy of ``mode``'s built-in template with ``lead`` in front (another prompt, the same variables)."""
    path = tmp_path / f"{mode}-{abs(hash(lead))}.jinja"
    path.write_text(lead + "\n" + (PROMPTS / f"{mode}.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    return str(path)


def test_a_runs_judge_eval_measures_the_judge_its_search_used(tiny_model_dir, gsm8k_like, tmp_path):
    """judge.both_orders=false and tie_margin=0 (set by _cfg) and the pairwise template reach judge-eval.

    Caught: the old loop passed judge-eval only the template and the batch size, so its results.json recorded
    PairwiseJudge's defaults (both orders, margin 0.1) for a run that searched with one order and no margin."""
    template = _template(tmp_path, "pairwise", "Compare the two steps below.")
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=0", "eval.judge_eval=true", "eval.judge_steps=false",
               "eval.limit=1", "eval.judge_eval_limit=2", "eval.judge_eval_k=2", "eval.judge_eval_max_steps=1",
               f"judge.pairwise_template={template}", "judge.batch_size=3")
    assert (cfg.judge.mode, cfg.judge.both_orders, cfg.judge.tie_margin) == ("pairwise", False, 0.0)
    loop.run(cfg)
    protocol = read_json(RunLayout(tmp_path / "t").iteration(0).judge_eval("judge_eval_before").results)["protocol"]
    assert protocol["mode"] == "pairwise" and protocol["template"] == template
    assert protocol["judge_options"] == {"batch_size": 3, "both_orders": False, "tie_margin": 0.0,
                                         "prefix_cache": True}
    command = protocol["command"]  # the command line that reproduces it names every setting that differs
    assert all(flag in command for flag in ("--one-order", "--tie-margin 0.0", f"--template {template}",
                                            "--batch-size 3", "--natural-max-steps 1"))


def test_judge_eval_args_carry_every_judge_setting(tmp_path):
    args = JudgeEvalArgs(judge=judge_config("generative", max_new_tokens=7, both_orders=False, tie_margin=0.0),
                         output_dir=str(tmp_path))
    # generative reads both_orders and max_new_tokens, never tie_margin (a written verdict has no margin)
    assert args.judge_flags() == ["--one-order", "--max-new-tokens 7"]
    with pytest.raises(ConfigError, match="--tie-margin must be in"):
        JudgeEvalArgs(judge=judge_config("pairwise", tie_margin=1.0), output_dir=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="the random judge reads no prompt template"):
        judge_config("random", template="x.jinja")


def test_presrm_eval_and_the_loop_ask_one_function_for_the_step_judge(monkeypatch, tmp_path, tiny_model_dir):
    """Caught: the old code decided the per-step judge twice (loop.step_judge_mode and cli._eval_step_judge)."""
    asked = []

    def decide(mode):
        asked.append(mode)
        return "random"

    monkeypatch.setattr(registry, "step_judge_for", decide)
    run_dir = tmp_path / "r"
    model = shutil.copytree(tiny_model_dir, run_dir / "iter_0" / "model")
    RunLayout(run_dir).config.write_text("config:\n  judge:\n    mode: generative\n")
    assert loop.step_judge_mode(load_config(None, ["judge.mode=pairwise"])) == "random"
    assert _eval_step_judge(argparse.Namespace(model=str(model), judge=None))[0] == "random"
    assert asked == ["pairwise", "generative"]


def test_presrm_eval_on_a_runs_model_judges_steps_with_the_runs_judge(tiny, tiny_model_dir, gsm8k_like, tmp_path):
    """A run with judge.mode=pointwise and its own pointwise template: `presrm eval` on its model scores steps
    with that template. Caught: the old command read only judge.mode and scored with the built-in prompt."""
    template = _template(tmp_path, "pointwise", "Be strict: one wrong number makes the step wrong.")
    run_dir = tmp_path / "r"
    model = shutil.copytree(tiny_model_dir, run_dir / "iter_0" / "model")
    RunLayout(run_dir).config.write_text(f"config:\n  judge:\n    mode: pointwise\n    template: {template}\n")
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(model), "--data-file", str(gsm8k_like), "--limit", "1", "--max-new-tokens",
                 "12", "--device", "cpu", "--precision", "fp32", "--output-dir", str(out)]) == 0
    rec = read_jsonl(out / "samples.jsonl")[0]
    texts = [s["text"] for s in rec["steps"]]
    items = [StepToJudge(rec["question"], tuple(texts[:i]), t) for i, t in enumerate(texts)]
    engine = HFEngine(*tiny)
    ours, builtin = PointwiseJudge(engine, template=template).score(items), PointwiseJudge(engine).score(items)
    assert ours != builtin  # the premise: the two prompts give other scores
    assert rec["step_scores"] == pytest.approx(ours, abs=1e-5)


def test_every_judge_template_is_read_at_run_start(tmp_path, caplog):
    """judge.outcome_template: no run builds an outcome judge, yet a broken file fails before any stage, naming
    the key. Caught: the old run never read the key, so a typo in it went unnoticed."""
    bad = tmp_path / "bad.jinja"
    bad.write_text("{{ question }} {% if %}")
    with pytest.raises(ConfigError, match=r"key 'judge.outcome_template': judge template .*bad.jinja, line 1"):
        loop.check_runnable(load_config(None, [f"judge.outcome_template={bad}"]))
    with pytest.raises(ConfigError, match="key 'judge.outcome_template': judge template .*nowhere.jinja cannot be"):
        loop.check_runnable(load_config(None, [f"judge.outcome_template={tmp_path / 'nowhere.jinja'}"]))
    caplog.set_level(logging.WARNING, logger="presrm.judge")
    loop.check_runnable(load_config(None, [f"judge.outcome_template={_template(tmp_path, 'outcome', 'Grade.')}"]))
    assert "judge.outcome_template is set, but this run builds no outcome judge" in caplog.text


def test_the_cli_natural_set_defaults_are_a_runs():
    """Caught: the old CLI sampled 8 steps at temperature 0.7, a run 6 at search.temperature (0.5)."""
    args = make_parser().parse_args(["judge-eval", "--output-dir", "x"])
    cfg = load_config(None)
    assert (args.natural_k, args.natural_max_steps, args.natural_temperature) == (
        cfg.eval.judge_eval_k, cfg.eval.judge_eval_max_steps, cfg.search.temperature)
    assert (JudgeEvalArgs.natural_k, JudgeEvalArgs.natural_max_steps, JudgeEvalArgs.natural_temperature) == (
        cfg.eval.judge_eval_k, cfg.eval.judge_eval_max_steps, cfg.search.temperature)


class CheckJudge(ScoreJudgeBase):
    """A step judge with other verdict words (Right / Wrong) and a probability score."""

    mode = "check"
    unit = "step"

    def __init__(self, engine=None, *, batch_size: int = 16):
        self.engine, self.batch_size = engine, batch_size

    def score(self, items, *, desc=None):
        return [0.9 for _ in items]


@pytest.fixture
def check_mode():
    entry = registry.register(registry.JudgeSpec("check", f"{__name__}:CheckJudge", "step", "a checker", eft=True,
                                                 verdicts=("Right", "Wrong"), p_correct=True))
    yield entry
    registry.unregister("check")


def test_verdict_words_and_probability_scores_come_from_the_registry(check_mode):
    """Caught: init_data wrote "Yes"/"No" for any step judge and search counted agreement for "pointwise" only."""
    pair = LabelledPair("p", "1+1?", (), "Step 1: 1 + 1 = 2", "Step 1: 1 + 1 = 3", {})
    assert [e["completion"] for e in eft_pointwise_examples([pair], lambda q, prev, s: s, check_mode.verdicts)] == [
        "Right", "Wrong"]
    steps = [NaturalStep(id=f"s{i}", problem_id="p", group="g", question="q", previous=(), step=f"Step 1: {i}",
                         label=label) for i, label in enumerate(("correct", "incorrect"))]
    out = on_policy_examples(steps, lambda q, prev, s: s, mode="check")
    assert sorted(e["completion"] for e in out) == ["Right", "Wrong"]
    entry = {"candidates": [{"score": 0.9, "wins": 1.0, "verdict": "correct"},
                            {"score": 0.2, "wins": 0.0, "verdict": "incorrect"}],
             "matches": [{"i": 0, "j": 1, "winner": "A"}], "score_kind": "check", "action": "append", "chosen": 0}
    record = {"steps": ["a"], "finished": True, "correct": True, "end": "final answer", "rollbacks": 0,
              "search": [entry]}
    assert search_stats([record], [])["judge_verifier"]["pointwise_agreement"] == 1.0
    entry["score_kind"] = "likelihood"  # a score that only ranks: no verdict read at 0.5
    assert search_stats([record], [])["judge_verifier"]["pointwise_agreement"] is None


def test_template_keys_live_in_the_registry():
    assert {m: registry.template_key(m) for m in registry.modes()} == {
        "pointwise": "template", "pairwise": "pairwise_template", "generative": "generative_template",
        "outcome": "outcome_template", "likelihood": None, "random": None}
    cfg = judge_config("outcome", template="o.jinja", base=JudgeConfig(mode="pairwise", tie_margin=0.0))
    assert (cfg.mode, cfg.outcome_template, cfg.tie_margin, cfg.template) == ("outcome", "o.jinja", 0.0, None)
