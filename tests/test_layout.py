"""The run-directory layout: one description that loop, report, resume, compare and eval share."""

from pathlib import Path

import pytest

from presrm.layout import EvalLayout, RunLayout, StageDir, samples_for

ROOT = Path("runs/x")
RUN = RunLayout(ROOT)


@pytest.mark.parametrize(("path", "expected"), [
    (RUN.config, "config.yaml"),
    (RUN.natural, "natural.jsonl"),
    (RUN.logs, "logs"),
    (RUN.model_card, "model_card.md"),
    (RUN.report_html, "report.html"),
    (RUN.report_json, "report.json"),
    (RUN.init.model, "init/model"),
    (RUN.init.ift, "init/ift.jsonl"),
    (RUN.init.eft, "init/eft.jsonl"),
    (RUN.init.on_policy, "init/on_policy.jsonl"),
    (RUN.init.train, "init/train.json"),
    (RUN.iteration(2).samples, "iter_2/samples.jsonl"),
    (RUN.iteration(2).search, "iter_2/search.json"),
    (RUN.iteration(2).pairs, "iter_2/pairs.jsonl"),
    (RUN.iteration(2).adapter, "iter_2/adapter"),
    (RUN.iteration(2).model, "iter_2/model"),
    (RUN.iteration(0).eval_files("eval_before")[0], "iter_0/eval_before.json"),
    (RUN.iteration(0).eval_files("eval_before")[1], "iter_0/eval_before_samples.jsonl"),
    (RUN.iteration(1).eval_files()[1], "iter_1/eval_samples.jsonl"),
    (RUN.iteration(0).judge_eval("judge_eval_before").results, "iter_0/judge_eval_before/results.json"),
    (EvalLayout(ROOT).results, "results.json"),
    (EvalLayout(ROOT).samples, "samples.jsonl"),
])
def test_paths(path, expected):
    assert path == ROOT / expected


@pytest.mark.parametrize(("summary", "samples"), [
    ("results.json", "samples.jsonl"), ("eval.json", "eval_samples.jsonl"),
    ("eval_before.json", "eval_before_samples.jsonl"),
])
def test_samples_next_to_a_summary(summary, samples):
    assert samples_for(ROOT / summary) == ROOT / samples


@pytest.mark.parametrize(("k", "init", "policy"), [(0, False, "embedded"), (0, True, "runs/x/init/model"),
                                                   (1, False, "runs/x/iter_0/model"), (3, True, "runs/x/iter_2/model")])
def test_policy_of_each_iteration(k, init, policy):
    assert RUN.policy(k, "embedded", init=init) == policy


@pytest.mark.parametrize(("iterations", "init", "final"), [(2, False, "iter_1/model"), (0, True, "init/model"),
                                                           (0, False, None)])
def test_final_model(iterations, init, final):
    assert RUN.final_model(iterations, init=init) == (None if final is None else ROOT / final)


def test_stage_completion_is_the_last_file_each_stage_writes(tmp_path):
    d = StageDir(tmp_path)
    assert not (d.searched() or d.trained() or d.evaluated())
    for f in (d.samples, d.search):
        f.write_text("")
    assert not d.searched()  # pairs.jsonl is written last
    d.pairs.write_text("")
    assert d.searched()
    d.train.write_text("{}")
    assert not d.trained()  # a model folder without its config is no model
    d.model.mkdir()
    (d.model / "config.json").write_text("{}")
    assert d.trained()
    d.eval_files("eval_before")[0].write_text("{}")
    assert d.evaluated("eval_before") and not d.evaluated()


def test_iterations_are_numbered_folders_in_order(tmp_path):
    for name in ("iter_10", "iter_2", "iter_x", "iter_", "init"):
        (tmp_path / name).mkdir()
    (tmp_path / "iter_3").write_text("a file, not an iteration")
    assert RunLayout(tmp_path).iterations() == [2, 10]
