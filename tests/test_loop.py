"""The whole loop on the tiny model: run directory, resume, and config mismatch."""

import os

import pytest

from presrm.config import load_config
from presrm.errors import RunStateError
from presrm.jsonio import read_json, read_jsonl
from presrm.loop import run


def _cfg(tiny_model_dir, gsm8k_like, tmp_path, *extra):
    return load_config(None, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=t", "device=cpu",
        f"search.data_file={gsm8k_like}", "search.num_problems=2", "search.k=3", "search.max_steps=2",
        "search.max_step_tokens=8", "search.temperature=1.0",
        "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
        f"eval.data_file={gsm8k_like}", "eval.limit=3", "eval.max_new_tokens=8", *extra,
    ])


def test_run_writes_complete_run_dir_and_resumes(tiny_model_dir, gsm8k_like, tmp_path):
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path)
    summary = run(cfg)
    root = tmp_path / "t"
    it = root / "iter_0"
    for f in ("config.yaml", "report.html", "report.json", "iter_0/eval_before.json", "iter_0/samples.jsonl",
              "iter_0/pairs.jsonl", "iter_0/train.json", "iter_0/adapter/adapter_config.json",
              "iter_0/model/config.json", "iter_0/eval.json", "iter_0/eval_samples.jsonl"):
        assert (root / f).exists(), f
    pairs = read_jsonl(it / "pairs.jsonl")
    assert summary["iterations"][0]["pairs"] == len(pairs) > 0
    assert read_json(it / "eval.json")["n"] == read_json(it / "eval_before.json")["n"] == 3
    assert read_json(it / "train.json")["lora_b_norm"] > 0
    assert read_json(it / "search.json")["pairs"] == len(pairs)
    html = (root / "report.html").read_text()
    assert "Step 1:" in html and "Iteration 0: step search" in html and "M1 (after iteration 0)" in html

    # resume: every stage is complete, so nothing is rewritten
    stamps = {p: os.stat(p).st_mtime_ns for p in (it / "pairs.jsonl", it / "train.json", it / "eval.json")}
    with pytest.raises(RunStateError, match="--resume"):
        run(cfg)
    again = run(cfg, resume=True)
    assert again["iterations"][0]["pairs"] == len(pairs)
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps

    # a crash after search but before training: resume trains on the same pairs
    for p in ("train.json", "eval.json"):
        (it / p).unlink()
    run(cfg, resume=True)
    assert read_jsonl(it / "pairs.jsonl") == pairs and (it / "eval.json").exists()


def test_resume_with_other_config_is_refused(tiny_model_dir, gsm8k_like, tmp_path):
    run(_cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false"))
    with pytest.raises(RunStateError, match="different config"):
        run(_cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false", "search.k=2"),
            resume=True)


def test_two_iterations_chain_models(tiny_model_dir, gsm8k_like, tmp_path):
    summary = run(_cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=2", "eval.before=false"))
    assert [it["iteration"] for it in summary["iterations"]] == [0, 1]
    # iteration 1 searches new problems with M1
    ids0 = {r["id"] for r in read_jsonl(tmp_path / "t" / "iter_0" / "samples.jsonl")}
    ids1 = {r["id"] for r in read_jsonl(tmp_path / "t" / "iter_1" / "samples.jsonl")}
    assert ids0 and ids1 and not ids0 & ids1
    assert read_json(tmp_path / "t" / "iter_1" / "eval.json")["model"].endswith("iter_1/model")
