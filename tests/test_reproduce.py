"""presrm reproduce: the report card, read from the kept evidence runs laid out as the two arms would be."""

from pathlib import Path

import pytest

from presrm.jsonio import read_json
from presrm.reproduce import CardLayout, collect, write_card

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture
def kept_arms(tmp_path) -> Path:
    """The judge ablation at M3 (docs/RESULTS.md) as a reproduction's folder: M1 from evidence_amx, the self-judge
    arm from evidence_norepeat (approach 4), the random arm from evidence_ablation_random."""
    links = {"self_judge/init": RESULTS / "evidence_amx" / "init",
             "self_judge/iter_1": RESULTS / "evidence_norepeat" / "iter_1",
             "random/iter_1": RESULTS / "evidence_ablation_random" / "iter_1"}
    for where, source in links.items():
        (tmp_path / where).mkdir(parents=True)
        for name in ("eval.json", "eval_samples.jsonl", "judge_eval"):
            if (source / name).exists():
                (tmp_path / where / name).symlink_to(source / name)
    (tmp_path / "self_judge" / "config.yaml").symlink_to(RESULTS / "evidence_norepeat" / "config.yaml")
    return tmp_path


def test_the_card_states_the_published_findings(kept_arms):
    data = collect(kept_arms, iterations=2)
    own, rnd = data["findings"]
    # docs/RESULTS.md: -12.2 points [-15.1, -9.1] against M1, -11.8 [-15.6, -7.9] against the random arm
    assert round(100 * own["difference"], 1) == -12.2 and [round(100 * x, 1) for x in own["ci95"]] == [-15.1, -9.1]
    assert round(100 * rnd["difference"], 1) == -11.8 and [round(100 * x, 1) for x in rnd["ci95"]] == [-15.6, -7.9]
    assert own["holds"] and rnd["holds"] and own["p"] < 0.001
    m1, final, random_final = data["models"]
    assert (m1["strict"]["correct"], final["strict"]["correct"], random_final["strict"]["correct"]) == (22, 23, 26)
    assert (m1["repeats"]["count"], final["repeats"]["count"], m1["no_answer"]["count"]) == (238, 56, 401)
    assert data["comparisons"]["self_vs_m1"]["strict"]["p_exact"] == pytest.approx(1.0)
    assert [j["model"] for j in data["judges"]] == ["M1", "M3, self-judge"]
    assert data["git"] == "63d5bb1d369d1398607a34ef52621babb8798aec"


def test_the_card_is_written_as_json_markdown_and_html(kept_arms):
    card = CardLayout(kept_arms)
    md, html = write_card(card, collect(kept_arms, iterations=2))
    text = md.read_text()
    assert "| the final model (M3) has a lower step error rate than M1 | -12.2% | [-15.1%, -9.1%] | < 0.001 | yes |" \
        in text
    assert "| M1 -> self-judge (1319 problems) | 22 -> 23 (p 1.000) |" in text
    page = html.read_text()
    assert page.startswith("<!doctype html>") and '<td class="yes">yes</td>' in page
    assert read_json(card.card_json)["findings"][1]["holds"] is True


def test_an_unfinished_reproduction_says_what_is_missing(kept_arms):
    (kept_arms / "random" / "iter_1" / "eval.json").unlink()
    with pytest.raises(Exception, match=r"random/iter_1/eval\.json missing; rerun with --resume"):
        collect(kept_arms, iterations=2)


def _recipe(tmp_path, tiny_model_dir, gsm8k_like) -> Path:
    """The reproduction recipe shrunk to the tiny model: IFT on the train file, one iteration, three eval problems."""
    import json

    from tests.conftest import SYNTHETIC

    train = tmp_path / "train.jsonl"  # questions that differ from the eval problems' (a train split)
    train.write_text("".join(json.dumps({"question": q.replace("?", " in all?"), "answer": a}) + "\n"
                             for q, a in SYNTHETIC))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
name: repro
output_dir: {tmp_path / "runs"}
model: {tiny_model_dir}
device: cpu
iterations: 1
init: {{ift: true, eft: false, data_file: {train}, offset: 0, ift_problems: 2, max_steps: 1, batch_size: 2,
        evaluate: true}}
search: {{data_file: {train}, offset: 2, num_problems: 2, k: 3, max_steps: 2, max_step_tokens: 8, temperature: 1.0,
          deterministic: true, no_repeats: true}}
judge: {{mode: likelihood}}
train: {{max_steps: 1, batch_size: 2, lora_r: 2, lora_alpha: 4, sft_weight: 1.0}}
eval: {{data_file: {gsm8k_like}, limit: 3, max_new_tokens: 8, before: false, judge_steps: false}}
loop: {{guard: warn, guard_problems: 2, guard_data_file: {train}, guard_offset: 4}}
""")
    return recipe


def _reproduce(recipe: Path, *extra: str, log=None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, "-m", "presrm", "reproduce", "--config", str(recipe), "engine=hf",
                             *extra], stdout=subprocess.PIPE, stderr=log or subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])


def test_reproduce_runs_both_arms_and_resumes_after_kill_9(tiny_model_dir, gsm8k_like, tmp_path):
    """presrm reproduce on the tiny model: the random arm starts from the self-judge arm's M1 with judge.mode
    random; killed -9 in the random arm, --resume finishes with the same pairs as an uninterrupted reproduction."""
    import signal
    import time

    from presrm.jsonio import read_jsonl, read_yaml

    recipe = _recipe(tmp_path, tiny_model_dir, gsm8k_like)
    proc = _reproduce(recipe, "name=ref")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "Report card: " in out and ("HOLDS: " in out or "does not hold: " in out)
    ref = tmp_path / "runs" / "ref"
    for f in ("report_card.md", "report_card.html", "report_card.json", "self_judge/init/eval.json",
              "self_judge/iter_0/eval.json", "random/iter_0/eval.json", "self_judge/iter_0/guard.json",
              "self_judge/stages.jsonl"):
        assert (ref / f).exists(), f
    rnd = read_yaml(ref / "random" / "config.yaml")["config"]
    assert rnd["judge"]["mode"] == "random" and rnd["init"]["model"] == str(ref / "self_judge" / "init" / "model")
    assert not (ref / "random" / "init" / "eval.json").exists()  # M1 is evaluated once, in the self-judge arm

    log = tmp_path / "killed.log"
    with log.open("w") as f:
        proc = _reproduce(recipe, "name=killed", log=f)
        t0 = time.time()
        while "reproduce: arm random" not in log.read_text():
            assert proc.poll() is None and time.time() - t0 < 600, log.read_text()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = _reproduce(recipe, "name=killed")
    assert again.wait(timeout=60) != 0  # the folder exists: without --resume it refuses
    resumed = _reproduce(recipe, "name=killed", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    killed = tmp_path / "runs" / "killed"
    for arm in ("self_judge", "random"):
        assert read_jsonl(killed / arm / "iter_0" / "pairs.jsonl") == read_jsonl(ref / arm / "iter_0" / "pairs.jsonl")
    assert (killed / "report_card.md").exists()


def test_reproduce_with_the_solution_level_arm(tiny_model_dir, gsm8k_like, tmp_path):
    """--solution-arm: a third arm from the same M1, search.granularity solution with the run's judge, pairs
    capped at the step-level arm's count; the card pairs it with M1 and with the step-level arm."""
    from presrm.jsonio import read_jsonl, read_yaml

    recipe = _recipe(tmp_path, tiny_model_dir, gsm8k_like)
    proc = _reproduce(recipe, "name=three", "--solution-arm")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    root = tmp_path / "runs" / "three"
    sol = read_yaml(root / "solution" / "config.yaml")["config"]
    step_pairs = read_jsonl(root / "self_judge" / "iter_0" / "pairs.jsonl")
    assert sol["search"]["granularity"] == "solution" and sol["judge"]["mode"] == "likelihood"
    assert sol["search"]["max_pairs"] == [max(len(step_pairs), 1)]
    assert sol["init"]["model"] == str(root / "self_judge" / "init" / "model")
    pairs = read_jsonl(root / "solution" / "iter_0" / "pairs.jsonl")
    assert len(pairs) <= len(step_pairs) and all(p["meta"]["granularity"] == "solution" for p in pairs)
    data = read_json(root / "report_card.json")
    assert [m["model"] for m in data["models"]][-1] == "M2, solution-level"
    assert {"solution_vs_m1", "self_vs_solution"} <= set(data["comparisons"])
    assert "| solution-level -> step-level (self-judge) (3 problems) |" in (root / "report_card.md").read_text()
