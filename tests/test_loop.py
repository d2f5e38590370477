"""The whole loop on the tiny model: run directory, resume, config mismatch, IFT/EFT init, recipes."""

import logging
import os
from pathlib import Path

import pytest

from presrm.config import load_config
from presrm.engines.holder import inference_precision
from presrm.errors import ConfigError, RunStateError
from presrm.guard import decide as DECIDE
from presrm.jsonio import read_json, read_jsonl
from presrm.loop import _stage_labels, run

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _cfg(tiny_model_dir, gsm8k_like, tmp_path, *extra):
    return load_config(None, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=t", "device=cpu",
        f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
        "search.max_steps=2",
        "search.max_step_tokens=8", "search.temperature=1.0",
        # A random model's P([[A]]) is ~0.51 whatever the steps: in both orders, or within the default
        # tie margin, every match would tie; one order and no margin give A (the first candidate) the win.
        "judge.both_orders=false", "judge.tie_margin=0",
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


def test_a_write_failing_midway_then_resume_gives_the_uninterrupted_run(tiny_model_dir, gsm8k_like, tmp_path,
                                                                        monkeypatch):
    """A full disk while a stage writes its last file: the run stops with a WriteError naming the file, no
    temporary file stays, and --resume (the disk freed) ends where an uninterrupted run ends."""
    import errno

    from presrm import jsonio
    from presrm.errors import WriteError

    real_fsync = os.fsync

    def full_disk_on_pairs(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".pairs.jsonl."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false")
    monkeypatch.setattr(jsonio.os, "fsync", full_disk_on_pairs)
    with pytest.raises(WriteError, match=r"iter_0/pairs\.jsonl: cannot write \(No space left on device\)"):
        run(cfg)
    monkeypatch.undo()
    it = tmp_path / "t" / "iter_0"
    assert (it / "samples.jsonl").exists() and not (it / "pairs.jsonl").exists()
    assert not list((tmp_path / "t").rglob(".*.tmp"))
    run(cfg, resume=True)
    ref = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false", "name=ref")
    run(ref)
    for name in ("samples.jsonl", "pairs.jsonl"):
        assert (it / name).read_bytes() == (tmp_path / "ref" / "iter_0" / name).read_bytes(), name
    assert (it / "model" / "config.json").exists()


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


def test_num_problems_per_iteration(tiny_model_dir, gsm8k_like, tmp_path):
    run(_cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=2", "search.num_problems=[1, 3]", "search.offset=0",
             "eval.before=false", "eval.after=false"))
    ids = [[r["id"] for r in read_jsonl(tmp_path / "t" / f"iter_{k}" / "samples.jsonl")] for k in (0, 1)]
    assert ids == [["gsm8k_train-0"], ["gsm8k_train-1", "gsm8k_train-2", "gsm8k_train-3"]]


def _train_file(tmp_path):
    """Problems in GSM8K's format whose questions differ from the eval problems' (a train split)."""
    import json

    from tests.conftest import SYNTHETIC

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": q.replace("?", " in all?"), "answer": a}) + "\n"
                            for q, a in SYNTHETIC))
    return path


def test_init_ift_eft_then_iteration_uses_m1(tiny_model_dir, gsm8k_like, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="presrm.loop")
    train = _train_file(tmp_path)
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "init.ift=true", "init.eft=true", f"init.data_file={train}",
               "init.offset=0", "init.ift_problems=4", "init.eft_problems=6", "init.max_steps=2",
               "init.batch_size=4", "eval.before=false")
    summary = run(cfg)
    init = tmp_path / "t" / "init"
    ift, eft = read_jsonl(init / "ift.jsonl"), read_jsonl(init / "eft.jsonl")
    assert len(ift) == 4 and all(e["completion"].rstrip().endswith(".") for e in ift)
    # the pairwise judge's own prompt, which ends in its prefilled "[[", then the rest of the verdict
    assert len(eft) == 12 and sorted(e["completion"] for e in eft) == ["A]]"] * 6 + ["B]]"] * 6
    assert all(e["prompt"].endswith("[[") and "[The Start of Step A]" in e["prompt"] for e in eft)
    train = read_json(init / "train.json")
    assert (train["ift_examples"], train["eft_examples"], train["optimizer_steps"]) == (4, 12, 2)
    assert train["init_problems_dropped_as_eval_problems"] == 0
    assert (init / "model" / "config.json").exists() and read_json(init / "eval.json")["model"] == str(init / "model")
    assert summary["init"]["train"]["lora_b_norm"] > 0
    assert "iteration 0: policy and judge = " + str(init / "model") in caplog.text
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage done")]
    assert done == [f"stage done: {label}" for label in _stage_labels(cfg)]


def test_init_leaves_out_eval_problems_and_adds_on_policy_examples(tiny_model_dir, gsm8k_like, tmp_path):
    """EFT from both sources; init problems that are also eval problems are left out; every model is judged."""
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=0", "init.eft=true", f"init.data_file={gsm8k_like}",
               "init.offset=0", "init.eft_problems=6", "init.max_steps=1", "init.batch_size=4", "judge.mode=pointwise",
               "init.eft_sources=[gold, on_policy]", "init.on_policy_problems=6", "init.on_policy_k=2",
               "init.on_policy_max_steps=2", "init.lora=false", "eval.judge_eval=true", "eval.judge_eval_limit=2",
               "eval.judge_eval_k=2", "eval.judge_eval_max_steps=2", "search.max_step_tokens=8")
    assert _stage_labels(cfg) == ["M0 eval", "M0 judge eval", "init SFT", "init eval", "init judge eval"]
    summary = run(cfg)
    root = tmp_path / "t"
    train = read_json(root / "init" / "train.json")
    assert train["init_problems_dropped_as_eval_problems"] == 3  # eval.limit=3 of the same file
    assert train["lora"] is False and train["lora_b_norm"] is None and train["master_weights_dtype"] == "float32"
    on_policy = read_jsonl(root / "init" / "on_policy.jsonl")
    assert {r["problem_id"] for r in on_policy} <= {"gsm8k_train-3", "gsm8k_train-4", "gsm8k_train-5"}
    eft = read_jsonl(root / "init" / "eft.jsonl")
    assert {e["source"] for e in eft} <= {"gold", "on_policy"} and train["eft_examples"] == len(eft)
    assert train["eft_on_policy_examples"] == sum(e["source"] == "on_policy" for e in eft)
    natural = read_jsonl(root / "natural.jsonl")
    assert natural and {r["problem_id"] for r in natural} <= {"gsm8k-0", "gsm8k-1"}
    from presrm.summary import run_lines

    lines = run_lines(summary)  # what presrm train prints: M0, the init, M1 once, then M0 against M1, paired
    assert [line.split(":")[0] for line in lines[1:4]] == ["M0 (before)", "Init (IFT/EFT)", "M1 (after init)"]
    assert lines[4].startswith("M0 -> M1, paired on 3 problems: strict ") and lines[5].startswith("Report: ")
    for where in ("iter_0/judge_eval_before", "init/judge_eval"):
        res = read_json(root / where / "results.json")
        assert res["natural"]["set"]["generator"] == str(tiny_model_dir)  # M0 wrote the set; both models judge it
        assert res["natural"]["set"]["steps"] == len(natural) and res["protocol"]["mode"] == "pointwise"
    report = read_json(root / "report.json")
    judged = [ev for ev in report["evals"] if ev.get("judge_quality")]
    assert [ev["label"] for ev in judged] == ["M0", "M1"]
    assert judged[1]["judge_quality"]["natural_n"][0] + judged[1]["judge_quality"]["natural_n"][1] <= len(natural)
    assert "The model as a judge" in (root / "report.html").read_text()


def test_zero_iterations_only_initialise(tiny_model_dir, gsm8k_like, tmp_path):
    """iterations=0 with init: M0 -> M1 (SFT) and M1's evaluation, then the report; no search or DPO."""
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=0", "init.eft=true",
               f"init.data_file={_train_file(tmp_path)}", "init.offset=0", "init.eft_problems=2", "init.max_steps=1",
               "init.batch_size=4", "eval.before=false")
    assert _stage_labels(cfg) == ["init SFT", "init eval"]
    summary = run(cfg)
    run_dir = tmp_path / "t"
    assert summary["iterations"] == [] and summary["init"]["eval"]["n"] == 3
    assert (run_dir / "init" / "model" / "config.json").exists() and not (run_dir / "iter_0").exists()
    assert (run_dir / "report.html").exists() and read_json(run_dir / "report.json")["init"]


@pytest.mark.parametrize(("overrides", "labels"), [
    ([], ["M0 eval", "iter 0/1 search", "iter 0/1 train", "iter 0/1 guard", "iter 0/1 eval"]),
    (["init.ift=true", "eval.after=false", "iterations=2", "loop.guard=off"],
     ["M0 eval", "init SFT", "iter 0/2 search", "iter 0/2 train", "iter 1/2 search", "iter 1/2 train"]),
    (["init.eft=true", "loop.guard=warn"], ["M0 eval", "init SFT", "init eval", "iter 0/1 search", "iter 0/1 train",
                                             "iter 0/1 guard", "iter 0/1 eval"]),
    (["init.eft=true", "init.evaluate=false", "loop.guard=off"],
     ["M0 eval", "init SFT", "iter 0/1 search", "iter 0/1 train", "iter 0/1 eval"]),
])
def test_stage_labels(overrides, labels):
    assert _stage_labels(load_config(None, overrides)) == labels


@pytest.mark.parametrize(("overrides", "search", "expected"), [
    (["device=cpu"], False, "bfloat16"), (["device=cpu"], True, "bfloat16"),
    (["device=cpu", "search.deterministic=true"], True, "float32"),
    (["device=cuda"], False, "bfloat16"), (["device=cuda"], True, "bfloat16"),
    (["device=cuda", "search.deterministic=true"], True, "float32"),
    (["device=cuda", "search.deterministic=true"], False, "bfloat16"),
])
def test_inference_precision(monkeypatch, overrides, search, expected):
    """The dtype generation and judging load in: fp32 for a deterministic search, else bf16 where it is native."""
    import torch

    from presrm import models
    from presrm.models import pick_device, pick_dtype

    monkeypatch.setattr(models, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = load_config(None, overrides)
    dtype = pick_dtype(pick_device(cfg.device), inference_precision(cfg, search=search))
    assert dtype == getattr(torch, expected)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_parses(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.iterations >= 1


def test_evidence_recipe_and_its_ablation_arms_parse(tmp_path):
    """The evidence recipe: vLLM, the likelihood judge without EFT, the full test for M1 and M3; each ablation
    arm starts from its M1 (init.model) and changes only the judge."""
    path = Path(__file__).resolve().parents[1] / "configs" / "evidence_cpu.yaml"
    cfg = load_config(path)
    assert cfg.engine == "vllm" and cfg.judge.mode == "likelihood" and not cfg.init.eft
    assert cfg.search.no_repeats and cfg.train.sft_weight == 1.0  # approach 4, the recipe that held up
    assert [cfg.eval.limit_of(m) for m in range(4)] == [300, None, 300, None]
    (tmp_path / "m1").mkdir()
    for mode in ("likelihood", "pointwise", "random"):
        arm = load_config(path, ["init.ift=false", f"init.model={tmp_path / 'm1'}", f"judge.mode={mode}",
                                 f"name=arm_{mode}", "eval.before=false"])
        assert arm.init.model and arm.judge.mode == mode and arm.search == cfg.search and arm.train == cfg.train


def test_recipes_exist():
    assert {"quickstart.yaml", "smoke.yaml", "presrm_paper.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize(("overrides", "match"), [
    (["search.num_problems=[]"], "num_problems"),
    (["search.num_problems=[2, 0]"], "num_problems"),
    (["search.num_problems=true"], "num_problems"),
    (["search.grounding=false", "search.require_correct_answer=true"], "require_correct_answer"),
    (["init.ift_problems=0"], "ift_problems"),
    (["iterations=-1"], "iterations must be >= 0"),
    (["init.eft=true", "judge.mode=likelihood"], "judge.mode likelihood reads none"),
    (["iterations=0", "eval.before=false"], "iterations=0 runs only"),
])
def test_bad_search_and_init_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_one_engine_per_model_and_none_while_training(tiny_model_dir, gsm8k_like, tmp_path, monkeypatch):
    """A model read by several stages in a row (M0: evaluation and judge evaluation; M1: its evaluation, its
    judge evaluation and the next search) is loaded once; every engine is closed before a model trains."""
    import presrm.engines
    import presrm.train
    from presrm.engines.holder import RUN_ENGINE

    loads, open_at_training = [], []
    real_open = presrm.engines.open_engine

    def counting_open(spec, options=None):
        loads.append(spec)
        return real_open(spec, options)

    real_train = presrm.train.train_step_dpo

    def watching_train(*args, **kwargs):
        open_at_training.append(RUN_ENGINE.engine is not None)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(presrm.engines, "open_engine", counting_open)
    monkeypatch.setattr(presrm.train, "train_step_dpo", watching_train)
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=2", "eval.judge_eval=true", "eval.judge_eval_limit=2",
               "eval.judge_eval_max_steps=1", "judge.mode=pointwise")
    run(cfg)
    root = tmp_path / "t"
    m1, m2 = str(root / "iter_0" / "model"), str(root / "iter_1" / "model")
    # M0: evaluation + natural set + judge eval + search (a fresh engine after the natural set sampled? the HF
    # engine seeds every batch itself, so it never needs one); M1: eval + judge eval + search; M2: eval + judge eval
    assert loads == [str(tiny_model_dir), m1, m2]
    assert open_at_training == [False, False] and RUN_ENGINE.engine is None


def test_eval_limit_per_model(tiny_model_dir, gsm8k_like, tmp_path):
    """eval.limit as a list: one entry per evaluated model (M0, M1, ...), the last repeating."""
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.limit=[3, 1]", "iterations=2")
    assert (cfg.eval.limit_of(0), cfg.eval.limit_of(1), cfg.eval.limit_of(5), cfg.eval.largest_limit()) == (3, 1, 1, 3)
    run(cfg)
    root = tmp_path / "t"
    assert [read_json(root / f)["n"] for f in ("iter_0/eval_before.json", "iter_0/eval.json", "iter_1/eval.json")] \
        == [3, 1, 1]
    with pytest.raises(ConfigError, match="eval.limit"):
        load_config(None, ["eval.limit=[3, 0]"])


def test_a_run_that_evaluates_nothing_never_reads_the_eval_split(tiny_model_dir, gsm8k_like, tmp_path):
    """eval.before and eval.after off: the eval task's data is never loaded, so a task whose data cannot be had
    (offline, no local file) does not stop the run. The old loop loaded it first and failed before any stage."""
    task = tmp_path / "no_data.yaml"
    text = (Path(__file__).resolve().parents[1] / "tasks" / "gsm8k.yaml").read_text()
    text = text.replace("${PRESRM_DATA_DIR}/gsm8k/test.jsonl", str(tmp_path / "absent.jsonl"))
    text = text.replace("../../shared/data/gsm8k/test.jsonl", str(tmp_path / "absent.jsonl"))
    task.write_text(text.replace("  hf_dataset: openai/gsm8k\n", "", 1).replace("name: gsm8k", "name: no_data"))
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false", f"eval.task={task}",
               "eval.data_file=null")
    summary = run(cfg)
    assert summary["iterations"][0]["pairs"] > 0
    assert read_json(tmp_path / "t" / "iter_0" / "search.json")["problems_dropped_as_eval_problems"] == 0


def test_search_problems_that_are_eval_problems_are_left_out(tiny_model_dir, gsm8k_like, tmp_path, caplog):
    """Search and eval on the same file: the problems the run evaluates on are never searched (train and test
    never mix), the count is in search.json and a warning says so. The old loop searched them silently."""
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.limit=1", "search.offset=0", "search.num_problems=3",
               "eval.after=false")
    with caplog.at_level(logging.WARNING, logger="presrm.loop"):
        run(cfg)
    search = read_json(tmp_path / "t" / "iter_0" / "search.json")
    assert search["problems_dropped_as_eval_problems"] == 1 and search["problems"] == 2
    searched = {r["id"] for r in read_jsonl(tmp_path / "t" / "iter_0" / "samples.jsonl")}
    assert searched == {"gsm8k_train-1", "gsm8k_train-2"}
    assert "iteration 0 search: 1 problem(s) left out because the run also evaluates on them" in caplog.text


def _worse_on_repeats(before, after, *, alpha):
    """The guard's verdict on a collapsed model (the real decision is tested on real outcomes in test_guard.py)."""
    from presrm.guard import describe

    verdict = {**DECIDE(before, after, alpha=alpha), "worse": ["repeats"], "promote": False}
    assert describe(verdict).startswith("worse on 1 dev problems: repeats")
    return verdict


def test_the_guard_stops_a_worse_model_and_resume_keeps_the_verdict(tiny_model_dir, gsm8k_like, tmp_path,
                                                                   monkeypatch, caplog):
    """loop.guard=stop: an iteration whose model the guard finds worse is not promoted; the run ends there with
    the previous model as its final model, says so in one line and in the report, and resume stops there too."""
    monkeypatch.setattr("presrm.guard.decide", _worse_on_repeats)
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "iterations=2", "loop.guard=stop", "loop.guard_problems=1",
               f"loop.guard_data_file={_train_file(tmp_path)}", "loop.guard_offset=0")
    with caplog.at_level(logging.WARNING, logger="presrm.loop"):
        summary = run(cfg)
    root = tmp_path / "t"
    guard = read_json(root / "iter_0" / "guard.json")
    assert guard["promoted"] is False and guard["worse"] == ["repeats"] and guard["n"] == 1
    assert (root / "iter_0" / "dev_eval_before.json").exists() and (root / "iter_0" / "dev_eval.json").exists()
    assert not (root / "iter_1").exists() and not (root / "iter_0" / "eval.json").exists()
    assert summary["final_model"] == str(tiny_model_dir) and summary["stopped"] == guard["line"]
    assert len(summary["iterations"]) == 1 and summary["iterations"][0]["guard"]["promoted"] is False
    assert f"iteration 0: M1 not promoted (loop.guard: stop), {guard['line']}" in caplog.text
    assert "NOT promoted (the run ended here)" in (root / "report.html").read_text()
    from presrm.summary import run_lines

    lines = run_lines(summary)
    assert "  collapse guard (stop): NOT promoted, " + guard["line"] in lines
    assert f"The collapse guard ended the run: {guard['line']}; final model {tiny_model_dir}" in lines
    again = run(cfg, resume=True)
    assert again["final_model"] == str(tiny_model_dir) and not (root / "iter_1").exists()


def test_the_guard_warns_and_goes_on(tiny_model_dir, gsm8k_like, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("presrm.guard.decide", _worse_on_repeats)
    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "loop.guard=warn", "loop.guard_problems=1", "eval.after=false")
    with caplog.at_level(logging.WARNING, logger="presrm.loop"):
        summary = run(cfg)
    assert read_json(tmp_path / "t" / "iter_0" / "guard.json")["promoted"] is True
    assert summary["final_model"] == str(tmp_path / "t" / "iter_0" / "model")
    assert "the guard (loop.guard: warn) says the new model is worse on 1 dev problems" in caplog.text


def test_the_guard_promotes_on_real_decisions_and_off_evaluates_nothing(tiny_model_dir, gsm8k_like, tmp_path):
    """With the real decision one dev problem can never be significant: the model is promoted. Off: no dev files."""
    on = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "name=guarded", "loop.guard=stop", "loop.guard_problems=1",
              "eval.after=false", "eval.before=false")
    run(on)
    assert read_json(tmp_path / "guarded" / "iter_0" / "guard.json")["promoted"] is True
    stages = [r["stage"] for r in read_jsonl(tmp_path / "guarded" / "stages.jsonl")]
    assert stages == ["iter 0/1 search", "iter 0/1 train", "iter 0/1 guard"]
    off = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "name=unguarded", "loop.guard=off", "eval.after=false")
    run(off)
    assert not list((tmp_path / "unguarded").rglob("dev_eval*"))
    assert not (tmp_path / "unguarded" / "iter_0" / "guard.json").exists()


@pytest.mark.parametrize(("damage", "named"), [
    ("truncate", r"iter_0/pairs\.jsonl:\d+: invalid JSON"),
    ("garble", r"iter_0/search\.json:1: invalid JSON"),
])
def test_a_damaged_run_file_is_named_on_resume(tiny_model_dir, gsm8k_like, tmp_path, damage, named):
    """A truncated last line of pairs.jsonl, or a search.json that is not JSON (a crash mid-copy): resume names
    the file and line, and never trains on it or reports from it."""
    from presrm.errors import DataError

    cfg = _cfg(tiny_model_dir, gsm8k_like, tmp_path, "eval.before=false", "eval.after=false")
    run(cfg)
    it = tmp_path / "t" / "iter_0"
    (it / "train.json").unlink()  # training is redone from the pairs on resume
    if damage == "truncate":
        text = (it / "pairs.jsonl").read_text()
        cut = len(text) - 1 - len(text.splitlines()[-1]) // 2  # the newline and half the last line lost
        (it / "pairs.jsonl").write_text(text[:cut])
    else:
        (it / "search.json").write_text("{not json")
    with pytest.raises(DataError, match=named):
        run(cfg, resume=True)
