"""benchmarks/gpu_check.sh's dry run on the CPU: the same recipe, the same per-tensor report and checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tiny_model_dir, gsm8k_like, tmp_path):
    out = tmp_path / "gc"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--no-install",
                        "--model", str(tiny_model_dir), "--out", str(out), f"search.data_file={gsm8k_like}",
                        f"eval.data_file={gsm8k_like}", "eval.limit=2", "search.offset=2"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "gpu_check: all checks passed" in r.stdout
    result = json.loads((out / "gpu_check.json").read_text())
    one = result["runs"]["one process"]
    assert one["precision"] == "bf16 autocast" and one["master_weights_dtype"] == "float32"
    assert one["summary"]["changed"] == one["summary"]["tensors"] == len(one["per_tensor"]) > 0
    assert all(0 < row["max_abs_change"] <= 1.01 * result["lr"] for row in one["per_tensor"])
    assert "model.layers.0.self_attn.q_proj.weight" in r.stdout  # the per-tensor table is printed
    assert result["problems"] == [] and "gpu_check: shared prefix: ok" in r.stdout
    assert result["shared_prefix"]["attention"] == "sdpa" and result["shared_prefix"]["loss_rel_diff"] < 1e-5
