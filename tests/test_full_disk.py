"""A real full disk: the run's output_dir on a small tmpfs fills up during a model save, and again during a JSONL
write. The run stops with one line (what it was writing, what it needed, what is free), leaves no half-written
model or temporary file, and --resume completes once space is freed.

Mounting a tmpfs needs root (CI runs as root); where mounting is not allowed the test skips, saying why.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()[:120]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``mount``."""
    filler = mount / "filler.bin"
    free = shutil.disk_usage(mount).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize(("stage", "leave", "message"), [
    ("iter 0/1 train", 48 * 1024, r"iter_0/model: cannot save the model \(no space left on device\): it needs "),
    ("iter 0/1 search", 4 * 1024,  # samples.jsonl, search.json or pairs.jsonl: whichever no longer fits
     r"iter_0/(samples\.jsonl|search\.json|pairs\.jsonl): cannot write \(No space left on device\): it needs "),
], ids=["model-save", "jsonl-write"])
def test_a_full_disk_stops_the_run_in_one_line_and_resume_completes(tiny_model_dir, gsm8k_like, tmpfs, stage,
                                                                     leave, message):
    import re

    args = [f"model={tiny_model_dir}", f"output_dir={tmpfs}", "name=t", "device=cpu", f"search.data_file={gsm8k_like}",
            "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3", "search.max_steps=2",
            "search.max_step_tokens=8", "search.temperature=1.0", "judge.both_orders=false", "judge.tie_margin=0",
            "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
            f"eval.data_file={gsm8k_like}", "eval.limit=2", "eval.max_new_tokens=8", "eval.after=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    log = tmpfs.parent / "run.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "presrm", "train", "--config", str(SMOKE), *args],
                                stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=REPO)
        t0 = time.time()
        while f"stage start: {stage}" not in log.read_text():
            assert proc.poll() is None and time.time() - t0 < 120, log.read_text()[-2000:]
            time.sleep(0.02)
        filler = _fill(tmpfs, leave)
        code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 2, text[-3000:]
    last = [line for line in text.splitlines() if line.startswith("presrm: error:")]
    assert len(last) == 1 and re.search(message, last[0]) and "free there" in last[0], text[-2000:]
    assert "Traceback" not in text
    run = tmpfs / "t" / "iter_0"
    assert not (run / "model").exists()  # no half-saved model is ever taken as a finished stage
    if stage.endswith("search"):
        assert not (run / "pairs.jsonl").exists()  # the search is not marked complete
    assert not [p for p in tmpfs.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written left
    filler.unlink()
    resumed = subprocess.run([sys.executable, "-m", "presrm", "train", "--config", str(SMOKE), *args, "--resume"],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "model" / "config.json").exists() and (run / "pairs.jsonl").exists()
