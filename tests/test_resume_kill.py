"""kill -9 a run at a random point, or SIGTERM it during training, resume it with --resume, and get the pairs
of an uninterrupted run.

The recipe is configs/smoke.yaml on the tiny model and a local data file, two
iterations, so the kill can land in any stage: M0 eval, step search, or step-DPO
training (iteration 1's pairs depend on the model iteration 0 trains). SIGTERM
(a cluster's time limit) lands in iteration 0's training and must end the run
cleanly: exit code 143, a message, no temporary file left.
The kill point is a random stage marker in the child's log plus a random
delay; the seed is printed on failure (set PRESRM_KILL_SEED to replay it).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from presrm.config import load_config
from presrm.loop import _stage_labels, run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def _overrides(tiny_model_dir, data, out, name):
    # Two iterations (iteration 1 searches with the model iteration 0 trained), the M0 eval for a kill
    # inside an eval stage, and everything else as small as it goes: this test runs the recipe 2.5 times.
    return [f"model={tiny_model_dir}", f"output_dir={out}", f"name={name}", "device=cpu", "iterations=2",
            f"search.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=2",
            "search.max_steps=2",
            "search.max_step_tokens=6", "search.temperature=1.0", "search.deterministic=true",
            "judge.both_orders=false", "judge.tie_margin=0", "train.max_steps=1", "train.batch_size=2",
            "train.lora_r=2", "train.lora_alpha=4", f"eval.data_file={data}", "eval.limit=1",
            "eval.max_new_tokens=4", "eval.after=false"]


def _train(args, log_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    # SIGINT as at a terminal: a shell without job control starts background jobs with SIGINT ignored, and a
    # test runner started that way would hand the ignoring down; Python then never raises KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "presrm", "train", "--config", str(SMOKE), *args],
                            stdout=subprocess.DEVNULL, stderr=log_file, env=env, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(marker: str, log: Path, proc, timeout: float = 120.0) -> None:
    t0 = time.time()
    while marker not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"run ended before {marker!r}:\n{log.read_text()[-2000:]}"
        assert time.time() - t0 < timeout, f"no {marker!r} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=["kill-9-anywhere", "sigterm-in-training", "ctrl-c-in-search"])
def test_kill_then_resume_gives_the_same_pairs(tiny_model_dir, gsm8k_like, tmp_path, sig):
    seed = int(os.environ.get("PRESRM_KILL_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    ref_cfg = load_config(SMOKE, _overrides(tiny_model_dir, gsm8k_like, tmp_path, "ref"))
    labels = _stage_labels(ref_cfg)
    # SIGKILL: any stage but the last (it could end before the kill); SIGTERM: iteration 0's training
    # SIGINT (Ctrl-C): iteration 0's search
    stage = (rng.choice(labels[:-1]) if sig == signal.SIGKILL else
             next(x for x in labels if x.endswith("0/2 search" if sig == signal.SIGINT else "0/2 train")))
    marker = f"stage start: {stage}"
    # The stages here last about a second each, and the last two (iteration 1's search and training) take
    # about a second together: a longer delay could land after the run's work, so a SIGKILL would find it
    # finished and a SIGTERM would reach its shutdown (exit 0, CI stop 23). SIGTERM goes at once, so it lands
    # in iteration 0's training; SIGKILL goes within a quarter second, inside the chosen stage or the next.
    delay = 0.0 if sig != signal.SIGKILL else rng.uniform(0.0, 0.25)
    why = f"PRESRM_KILL_SEED={seed}: signal {sig.name} {delay:.2f} s after {marker!r}"

    args = _overrides(tiny_model_dir, gsm8k_like, tmp_path, "killed")
    log = tmp_path / "killed.log"
    with log.open("w") as f:
        proc = _train(args, f)
        try:
            _wait_for(marker, log, proc)
            time.sleep(delay)
            assert proc.poll() is None, f"{why}: the run finished before the kill"
            if sig == signal.SIGTERM:  # the point of this case: the signal reaches a run that is training
                assert "stage done: iter 0/2 train" not in log.read_text(), f"{why}: training ended before the kill"
            os.kill(proc.pid, sig)
            code = proc.wait(timeout=60)
            if sig == signal.SIGKILL:
                assert code == -signal.SIGKILL
            elif sig == signal.SIGINT:  # one Ctrl-C stops it, with one line saying how to go on
                assert code == 130, f"{why}: exit code {code}\n{log.read_text()[-3000:]}"
                assert "presrm: interrupted; rerun with --resume to continue" in log.read_text()
                assert "Traceback" not in log.read_text()
            else:
                assert code == 128 + signal.SIGTERM, f"{why}: exit code {code}\n{log.read_text()[-3000:]}"
                assert "presrm: terminated (SIGTERM); rerun with --resume" in log.read_text()
                assert not list((tmp_path / "killed").rglob(".*.tmp")), f"{why}: SIGTERM left temporary files"
        finally:
            if proc.poll() is None:
                proc.kill()
    with log.open("a") as f:
        resumed = _train([*args, "--resume"], f)
        assert resumed.wait(timeout=300) == 0, f"{why}; resume failed:\n{log.read_text()[-3000:]}"

    run(ref_cfg)  # the uninterrupted run, same seed and recipe
    for k in (0, 1):
        for name in ("pairs.jsonl", "samples.jsonl"):
            got = (tmp_path / "killed" / f"iter_{k}" / name).read_bytes()
            want = (tmp_path / "ref" / f"iter_{k}" / name).read_bytes()
            assert got == want, f"{why}: iter_{k}/{name} differs"
    assert (tmp_path / "ref" / "iter_1" / "pairs.jsonl").read_text().strip(), "no pairs: the test compares nothing"
    leftovers = [p.name for p in (tmp_path / "killed").rglob(".*.tmp")]
    assert not leftovers, f"{why}: temporary files left behind: {leftovers}"
