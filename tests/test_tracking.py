"""train.report_to: trainers and the loop log to TensorBoard (offline); train.push_to_hub: card, offline failure."""

import json
from pathlib import Path

import pytest

from presrm.cli import main
from presrm.config import load_config
from presrm.errors import ConfigError
from presrm.hub import model_card
from presrm.jsonio import read_json, read_jsonl
from presrm.loop import run
from presrm.tracking import figures, resolve_report_to
from tests.conftest import SYNTHETIC

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _overrides(model_dir, data, out, *extra):
    return [f"model={model_dir}", f"output_dir={out}", "name=t", "device=cpu", f"search.data_file={data}",
            f"eval.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
            "search.max_steps=2",
            "search.max_step_tokens=8", "search.temperature=1.0", "judge.mode=pairwise", "judge.both_orders=false",
            "judge.tie_margin=0", "train.max_steps=2", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
            "eval.limit=3", "eval.max_new_tokens=8", *extra]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tb_run(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("tensorboard")
    tmp = tmp_path_factory.mktemp("tb")
    data = tmp / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in SYNTHETIC))
    cfg = load_config(SMOKE, _overrides(tiny_model_dir, data, tmp, "train.report_to=tensorboard"))
    return cfg, run(cfg), tmp / "t"


def test_tensorboard_gets_the_trainer_and_the_loop_figures(tb_run):
    cfg, summary, root = tb_run
    loop = _scalars(root / "logs" / "loop")
    pairs = read_jsonl(root / "iter_0" / "pairs.jsonl")
    assert loop["search/pairs"] == [(0, float(len(pairs)))]
    before, after = read_json(root / "iter_0" / "eval_before.json"), read_json(root / "iter_0" / "eval.json")
    assert loop["eval/strict_accuracy"] == [(0, pytest.approx(before["strict"]["accuracy"])),
                                            (1, pytest.approx(after["strict"]["accuracy"]))]
    train = read_json(root / "iter_0" / "train.json")
    assert loop["train/first_loss"] == [(0, pytest.approx(train["first_loss"]))]
    assert loop["search/problems"] == [(0, 2.0)]
    trainer = _scalars(root / "iter_0" / "logs")  # TRL's DPOTrainer, through transformers' callback
    assert [step for step, _ in trainer["train/loss"]] == [1, 2]


def test_figures_are_logged_once_per_step():
    summary = {"before": {"strict": {"accuracy": 0.5}, "flexible": {"accuracy": 0.75}},
               "init": {"train": {}, "eval": {"strict": {"accuracy": 0.6}, "flexible": {"accuracy": 0.8}}},
               "iterations": [{"iteration": 0, "pairs": 7, "search": {"problems": 4, "judge_verifier": {
                   "within_step_agreement": None}}, "train": {"first_loss": 0.69, "last_loss": 0.5},
                   "eval": {"strict": {"accuracy": 0.7}, "flexible": {"accuracy": 0.9}}}]}
    got = {(tag, step): v for tag, step, v in figures(summary)}
    assert got[("eval/strict_accuracy", 0)] == 0.5 and got[("eval/strict_accuracy", 1)] == 0.6
    assert got[("eval/strict_accuracy", 2)] == 0.7  # M2: init made M1, iteration 0 made M2
    assert got[("search/pairs", 0)] == 7 and ("judge_verifier/within_step_agreement", 0) not in got


@pytest.mark.parametrize(("value", "match"), [("tensorbored", "unknown tracker 'tensorbored'"),
                                              (["tensorboard", "wandb"], "wandb is not installed")])
def test_report_to_is_checked_when_the_run_starts(value, match, monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(ConfigError, match=f"train.report_to: {match}"):
        resolve_report_to(value)
    assert resolve_report_to("none") == [] and resolve_report_to(["tensorboard"]) == ["tensorboard"]
    assert resolve_report_to("all") == ["tensorboard"]


def test_model_card_holds_the_run_tables(tb_run):
    cfg, summary, _ = tb_run
    card = model_card(cfg, summary)
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "| M0 (base) |" in card and "| M1 (after iteration 0) |" in card
    it = summary["iterations"][0]
    assert f"| 0 | {it['search']['problems']} | {it['pairs']} |" in card
    assert "```yaml\nname: t\n" in card


def test_push_to_hub_offline_fails_in_one_line_before_the_run(tiny_model_dir, gsm8k_like, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", "--config", str(SMOKE),
                 *_overrides(tiny_model_dir, gsm8k_like, tmp_path, "train.push_to_hub=true")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("presrm: error: train.push_to_hub: the Hugging Face hub cannot be reached")
    assert not (tmp_path / "t").exists()  # nothing ran
