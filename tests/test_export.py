"""presrm export: a configs/smoke.yaml run's pairs and labelled steps in TRL's and Step-DPO's formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from presrm.cli import main
from presrm.config import load_config
from presrm.export import check_stepwise, export_run
from presrm.jsonio import read_jsonl
from presrm.loop import run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
STEP_DPO_FIELDS = ["dataset", "prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen",
                   "full_rejected", "answer"]  # xinlai/Math-Step-DPO-10K's features, in its order
PROVENANCE = {"run", "iteration", "problem_id", "split", "source", "labeller"}


@pytest.fixture(scope="module")
def smoke_run(tiny_model_dir, tmp_path_factory) -> Path:
    """configs/smoke.yaml on the tiny model: one iteration of step search (pairs) and step-DPO, judge eval on."""
    from tests.conftest import SYNTHETIC

    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in SYNTHETIC))
    cfg = load_config(SMOKE, [f"model={tiny_model_dir}", f"output_dir={tmp}", "name=smoke", "device=cpu",
                              f"search.data_file={data}", "search.offset=3", "loop.guard=off",
                              "search.num_problems=3", "search.k=3",
                              "search.max_steps=3", "search.max_step_tokens=8", "search.temperature=1.0",
                              "search.grounding=false", "judge.both_orders=false", "judge.tie_margin=0",
                              "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
                              f"eval.data_file={data}", "eval.limit=2", "eval.max_new_tokens=8",
                              "eval.after=false"])
    run(cfg)
    root = tmp / "smoke"
    assert read_jsonl(root / "iter_0" / "pairs.jsonl"), "the smoke run made no pairs: nothing to export"
    return root


def _load(out: Path):
    import datasets

    return datasets.load_from_disk(str(out / "dataset"))


def test_trl_preference_round_trip_and_trains(smoke_run, tmp_path, tiny_model_dir):
    pairs = read_jsonl(smoke_run / "iter_0" / "pairs.jsonl")
    summary = export_run(smoke_run, "trl-preference", tmp_path / "pref")
    dd = _load(tmp_path / "pref")
    assert summary["rows"] == {"train": len(pairs)} and list(dd) == ["train"]
    rows = dd["train"].to_list()
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        (p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    for r, p in zip(rows, pairs, strict=True):
        assert PROVENANCE <= set(r) and r["labeller"] == "judge" and r["iteration"] == 0 and r["split"] == "train"
        assert r["run"] == "smoke" and r["problem_id"] == p["meta"]["problem_id"]
    assert read_jsonl(tmp_path / "pref" / "train.jsonl") == rows  # the JSONL copy says the same
    # TRL's own DPO preparation (tokenizing, EOS handling) takes the export as it is
    from presrm.config import TrainConfig
    from presrm.models import load_model
    from presrm.train import train_step_dpo

    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True)
    metrics, _ = train_step_dpo(model, tok, rows, TrainConfig(max_steps=1, batch_size=2, lora_r=2, lora_alpha=4),
                                tmp_path / "adapter", device="cpu")
    assert metrics["pairs"] == len(rows) and metrics["optimizer_steps"] == 1


def test_step_dpo_has_the_published_fields(smoke_run, tmp_path):
    export_run(smoke_run, "step-dpo", tmp_path / "sd")
    rows = _load(tmp_path / "sd")["train"].to_list()
    samples = {r["id"]: r for r in read_jsonl(smoke_run / "iter_0" / "samples.jsonl")}
    pairs = read_jsonl(smoke_run / "iter_0" / "pairs.jsonl")
    for r, p in zip(rows, pairs, strict=True):
        assert list(r)[:len(STEP_DPO_FIELDS)] == STEP_DPO_FIELDS
        problem = samples[p["meta"]["problem_id"]]
        assert r["prompt"] == problem["question"] and r["answer"] == problem["gold"]
        assert r["initial_reason_steps"] == "".join(s + "\n" for s in p["meta"]["previous_steps"])
        assert r["full_chosen"] == r["initial_reason_steps"] + p["chosen"]
        assert r["full_rejected"] == r["initial_reason_steps"] + p["rejected"]


def test_trl_stepwise_labels_come_from_the_verifier(smoke_run, tmp_path):
    """keep: every search candidate a row, labelled by the verifier (null where it cannot decide); drop: only
    decided steps, a row cut before its first undecided step. The tiny model writes no arithmetic, so drop is
    shown on a natural set of known steps added to a copy of the run."""
    import shutil

    from presrm.verify import check_step

    def verifier(step):
        return {"correct": True, "incorrect": False}.get(check_step(step).verdict)

    export_run(smoke_run, "trl-stepwise", tmp_path / "keep", unverifiable="keep")
    kept = [r for split in _load(tmp_path / "keep").values() for r in split.to_list()]
    n_candidates = sum(len(e["candidates"]) for rec in read_jsonl(smoke_run / "iter_0" / "samples.jsonl")
                       for e in rec["search"])
    assert sum(r["source"] == "step search candidates" for r in kept) == n_candidates > 0
    for r in kept:
        assert r["labeller"] == "verifier" and PROVENANCE <= set(r)
        assert r["labels"] == [verifier(s) for s in r["completions"]]

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    q = "Tom has 7 apples and doubles them. How many?"
    natural = [("a", ["Step 1: 3 + 4 = 7"], "Step 2: 7 * 2 = 15", "incorrect"),
               ("b", ["Step 1: He buys apples."], "Step 2: 7 * 2 = 14", "correct"),  # undecided first step
               ("c", [], "Step 1: 7 * 2 = 14", "correct")]
    (run / "natural.jsonl").write_text("".join(json.dumps(
        {"id": f"p-{i}/s1/c0", "problem_id": f"p-{i}", "question": q, "previous": prev, "step": step,
         "label": label, "group": f"p-{i}/s1"}) + "\n" for i, prev, step, label in natural))
    export_run(run, "trl-stepwise", tmp_path / "drop")
    dd = _load(tmp_path / "drop")
    test = dd["test"].to_list()
    assert [(r["problem_id"], r["completions"], r["labels"]) for r in test] == [
        ("p-a", ["Step 1: 3 + 4 = 7", "Step 2: 7 * 2 = 15"], [True, False]),
        ("p-c", ["Step 1: 7 * 2 = 14"], [True])]  # p-b cut before its undecided first step: nothing left
    assert all(r["source"] == "natural-error set" and r["split"] == "test" and r["iteration"] is None for r in test)
    for r in [x for split in dd.values() for x in split.to_list()]:
        check_stepwise(r)  # TRL's documented format: str prompt, str steps, one bool per step
        assert r["labels"] == [verifier(s) for s in r["completions"]]


def test_stepwise_check_refuses_what_trl_would():
    check_stepwise({"prompt": "q", "completions": ["a", "b"], "labels": [True, False]})
    for bad in ({"prompt": "q", "completions": ["a"], "labels": [None]},
                {"prompt": "q", "completions": ["a", "b"], "labels": [True]},
                {"prompt": ["q"], "completions": ["a"], "labels": [True]},
                {"prompt": "q", "completions": [], "labels": []}):
        with pytest.raises(ValueError, match="stepwise"):
            check_stepwise(bad)


def test_bad_input_is_one_line_and_exit_2(smoke_run, tmp_path, capsys):
    cases = [
        ([str(tmp_path), "--format", "trl-preference", "--output", str(tmp_path / "o1")], "not a presrm run"),
    ]
    fresh = tmp_path / "fresh"  # a run that has not searched yet
    fresh.mkdir()
    (fresh / "config.yaml").write_text((smoke_run / "config.yaml").read_text())
    cases.append(([str(fresh), "--format", "step-dpo", "--output", str(tmp_path / "o2")], "no step pairs"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases.append(([str(smoke_run), "--format", "trl-preference", "--output", str(busy)], "not an empty folder"))
    for argv, match in cases:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("presrm: error:") and match in err and "\n" not in err, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]  # nothing written on error
    with pytest.raises(SystemExit) as e:
        main(["export", str(smoke_run), "--format", "parquet", "--output", str(tmp_path / "o3")])
    assert e.value.code == 2 and not (tmp_path / "o3").exists()


def test_push_to_hub_offline_is_one_line(smoke_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(smoke_run), "--format", "trl-preference", "--output", str(tmp_path / "p"),
                 "--push-to-hub", "me/pairs"]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "the export is on disk" in err
    assert (tmp_path / "p" / "dataset").is_dir()  # the export itself is kept
