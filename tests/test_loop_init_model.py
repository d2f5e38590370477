"""Runs on the tiny model: a given M1 (init.model), per-step scores from the run's judge, up-front checks."""

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from presrm.config import load_config
from presrm.data import load_problems, load_task
from presrm.errors import ConfigError
from presrm.jsonio import read_json, read_jsonl
from presrm.judge import RandomJudge, StepToJudge
from presrm.layout import RunLayout, StageDir
from presrm.loop import _eval_stage, _stage_labels, check_runnable, run, step_judge_mode
from tests.test_loop import _cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def given_m1(tiny_model_dir, tmp_path):
    """A model folder standing for an M1 initialised elsewhere (another path than the run's model)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "init" / "model"))


def test_given_m1_is_iteration_0s_policy_with_no_sft_and_random_step_scores(tiny_model_dir, gsm8k_like, tmp_path,
                                                                           given_m1, caplog):
    caplog.set_level(logging.INFO, logger="presrm.loop")
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, f"init.model={given_m1}", "eval.before=false",
               "judge.mode=random")
    assert _stage_labels(cfg) == ["init eval", "iter 0/1 search", "iter 0/1 train", "iter 0/1 eval"]
    summary = run(cfg)
    root = tmp_path / "t"
    init = root / "init"
    assert not (init / "train.json").exists() and not (init / "model").exists()  # no IFT/EFT
    assert read_json(init / "given.json")["model"] == str(given_m1) == summary["init"]["model"]
    assert summary["init"]["given"]["key"] == "init.model" and "train" not in summary["init"]
    assert read_json(init / "eval.json")["model"] == str(given_m1)
    assert f"iteration 0: policy and judge = {given_m1}" in caplog.text
    assert read_json(root / "iter_0" / "eval.json")["model"] == str(root / "iter_0" / "model")

    # per-step scores of every evaluation come from the run's (random) judge, seeded with the run's seed
    for name in ("init/eval", "iter_0/eval"):
        ev = read_json(root / f"{name}.json")
        assert ev["protocol"]["judge_steps_mode"] == "random" and ev["protocol"]["judge"]["mode"] == "random"
        rec = read_jsonl(root / f"{name}_samples.jsonl")[0]
        texts = [s["text"] for s in rec["steps"]]
        want = RandomJudge(seed=cfg.seed).score([StepToJudge(rec["question"], tuple(texts[:i]), t)
                                                 for i, t in enumerate(texts)])
        assert rec["step_scores"] == want
    # the search ranked by the same control
    entries = [e for r in read_jsonl(root / "iter_0" / "samples.jsonl") for e in r["search"]
               if len(e["candidates"]) > 1]
    assert entries and all(e["score_kind"] == "random" for e in entries)

    report = read_json(root / "report.json")
    assert report["init"]["given"]["model"] == str(given_m1)
    assert [ev["label"] for ev in report["evals"]] == ["M1", "M2"]
    assert report["evals"][0]["title"] == f"M1 (given: {given_m1})"
    assert report["evals"][0]["step_judge"].startswith("random score")
    html = (root / "report.html").read_text()
    assert "step scores: random score" in html

    # --resume: every stage is complete, nothing is redone
    files = [init / "given.json", init / "eval.json", root / "iter_0" / "pairs.jsonl", root / "iter_0" / "eval.json"]
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    again = run(cfg, resume=True)
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps and again["init"]["model"] == str(given_m1)


@pytest.mark.parametrize(("mode", "steps_mode"), [("pairwise", "pointwise"), ("generative", "pointwise"),
                                                  ("pointwise", "pointwise"), ("likelihood", "likelihood"),
                                                  ("random", "random")])
def test_step_judge_follows_the_run_judge_when_it_scores_steps(mode, steps_mode):
    assert step_judge_mode(load_config(None, [f"judge.mode={mode}"])) == steps_mode


@pytest.mark.parametrize(("mode", "steps_mode"), [("pairwise", "pointwise"), ("likelihood", "likelihood")])
def test_eval_stage_records_the_step_judge(tiny_model_dir, gsm8k_like, tmp_path, mode, steps_mode):
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, f"judge.mode={mode}", "eval.limit=2")
    task = load_task(cfg.eval.task)
    problems = load_problems(task, limit=2, data_file=cfg.eval.data_file)
    summary, skipped = _eval_stage(cfg, str(tiny_model_dir), StageDir(tmp_path / "s"), "eval", problems, task)
    assert not skipped and summary["protocol"]["judge_steps_mode"] == steps_mode
    assert summary["protocol"]["judge"]["mode"] == steps_mode
    records = read_jsonl(tmp_path / "s" / "eval_samples.jsonl")
    assert all(len(r["step_scores"]) == len(r["steps"]) for r in records)


@pytest.mark.parametrize(("overrides", "match"), [
    (["init.model=somewhere", "init.ift=true"], "init.ift and init.eft must be false"),
    (["init.model=somewhere", "init.eft=true"], "init.ift and init.eft must be false"),
    (["init.model=''"], "init.model must be a model folder or null"),
])
def test_init_model_settings_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_iterations_0_with_a_given_m1_only_evaluates_it():
    cfg = load_config(None, ["init.model=x", "iterations=0", "eval.before=false"])
    assert _stage_labels(cfg) == ["init eval"]


@pytest.mark.parametrize(("overrides", "match"), [
    (["init.model={missing}"], r"key 'init.model': .*/nowhere does not exist"),
    (["init.model={tmp}"], r"key 'init.model': .* is not a model folder \(no config.json\)"),
    (["search.task=no_such_task"], "key 'search.task': task 'no_such_task' not found"),
    (["search.data_file={missing}"], r"key 'search.data_file': .*/nowhere does not exist"),
])
def test_run_refuses_what_cannot_run_before_any_stage(tiny_model_dir, gsm8k_like, tmp_path, overrides, match):
    fill = {"missing": tmp_path / "nowhere", "tmp": tmp_path}
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path / "out", *[o.format(**fill) for o in overrides])
    with pytest.raises(ConfigError, match=match):
        run(cfg)
    assert not (tmp_path / "out").exists()  # refused before the run directory was made


def test_vllm_needs_vllm_here(monkeypatch):
    from presrm.engines import vllm as vllm_engine

    monkeypatch.setattr(vllm_engine, "vllm_available", lambda: "vLLM is not installed (pip install vllm)")
    with pytest.raises(ConfigError, match="engine: vllm cannot run here: vLLM is not installed"):
        check_runnable(load_config(None, ["engine=vllm"]))
    monkeypatch.setattr(vllm_engine, "vllm_available", lambda: None)
    check_runnable(load_config(None, ["engine=vllm", "judge.mode=likelihood"]))  # every engine reads span log-probs
    check_runnable(load_config(None, ["engine=vllm", "judge.mode=pairwise"]))


def test_train_cli_engine_vllm_without_vllm_exits_2_at_once(tmp_path):
    from presrm.engines.vllm import vllm_available

    if vllm_available() is None:
        pytest.skip("vllm is installed here")
    r = subprocess.run([sys.executable, "-m", "presrm", "train", "--config", str(ROOT / "configs" / "smoke.yaml"),
                        "engine=vllm", f"output_dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("presrm: error: engine: vllm cannot run here")
    assert not (tmp_path / "runs").exists()


def _args(model, judge=None):
    return argparse.Namespace(model=str(model), judge=judge)


def test_presrm_eval_step_judge_default(tmp_path, tiny_model_dir):
    from presrm.cli import _eval_step_judge

    run_dir = tmp_path / "r"
    model = Path(shutil.copytree(tiny_model_dir, run_dir / "iter_0" / "model"))
    assert _eval_step_judge(_args(model)) == ("pointwise", "default")  # no config.yaml: not a run's folder
    for mode, want in (("likelihood", "likelihood"), ("random", "random"), ("pairwise", "pointwise")):
        RunLayout(run_dir).config.write_text(f"config:\n  judge:\n    mode: {mode}\n")
        got, source = _eval_step_judge(_args(model))
        assert got == want and str(RunLayout(run_dir).config) in source
    assert _eval_step_judge(_args(model, "pointwise")) == ("pointwise", "--judge")
    assert _eval_step_judge(_args("embedded")) == ("pointwise", "default")


def test_presrm_eval_judge_flag(tiny_model_dir, gsm8k_like, tmp_path, capsys):
    from presrm.cli import main

    out = tmp_path / "ev"
    common = ["eval", "--model", str(tiny_model_dir), "--data-file", str(gsm8k_like), "--limit", "2",
              "--max-new-tokens", "6", "--device", "cpu", "--precision", "fp32", "--seed", "4"]
    assert main([*common, "--judge", "random", "--output-dir", str(out)]) == 0
    res = read_json(out / "results.json")
    assert res["protocol"]["judge_steps_mode"] == "random" and res["protocol"]["judge_steps_source"] == "--judge"
    rec = read_jsonl(out / "samples.jsonl")[0]
    texts = [s["text"] for s in rec["steps"]]
    assert rec["step_scores"] == RandomJudge(seed=4).score([StepToJudge(rec["question"], tuple(texts[:i]), t)
                                                            for i, t in enumerate(texts)])
    assert "step scores: random score" in (out / "report.html").read_text()
    assert main([*common, "--judge", "random", "--judge-template", "x.jinja", "--output-dir", str(out)]) == 2
    assert "the random judge (--judge) has none" in capsys.readouterr().err
