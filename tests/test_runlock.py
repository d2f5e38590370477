"""One run per run directory: a second run is refused at once naming the holder; a killed run's lock is taken
over; readers take no lock."""

import os
import signal
import subprocess
import sys
import time

import pytest

from presrm.errors import RunStateError
from presrm.runlock import RunLock

HOLD = "import sys, time; from pathlib import Path; from presrm.runlock import RunLock\n" \
       "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"


def _holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(RunStateError, match=rf"in use by another presrm run \(pid {proc.pid} on host "
                                                rf"{os.uname().nodename}, since "):
            with RunLock(tmp_path / "run"):
                pass
        assert time.monotonic() - start < 1.0  # at once, no waiting
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_runs_lock_is_taken_over(tmp_path, caplog):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert RunLock(tmp_path / "run").holder()["pid"] == proc.pid  # the stale file is still there
    with caplog.at_level("INFO", logger="presrm.runlock"), RunLock(tmp_path / "run") as held:
        assert held.holder()["pid"] == os.getpid()
    assert f"taking over {tmp_path / 'run' / '.lock'}, left by pid {proc.pid}" in caplog.text
    assert RunLock(tmp_path / "run").holder() == {}  # released cleanly: nobody named


def test_a_locked_run_is_still_read(tiny_model_dir, gsm8k_like, tmp_path):
    """presrm report, compare and export read a run while another process holds its lock."""
    from presrm.cli import main
    from presrm.config import load_config
    from presrm.loop import run

    cfg = load_config(None, [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "name=run", "device=cpu",
                             f"search.data_file={gsm8k_like}", "search.offset=3", "loop.guard=off",
                             "search.num_problems=2", "search.k=3", "search.max_steps=2", "search.max_step_tokens=8",
                             "search.temperature=1.0", "judge.both_orders=false", "judge.tie_margin=0",
                             "train.max_steps=1", "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4",
                             f"eval.data_file={gsm8k_like}", "eval.limit=2", "eval.max_new_tokens=8"])
    run(cfg)
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunStateError, match="in use by another presrm run"):
            run(cfg, resume=True)
        assert main(["report", str(tmp_path / "run")]) == 0
        evals = tmp_path / "run" / "iter_0"
        assert main(["compare", str(evals / "eval_before.json"), str(evals / "eval.json")]) == 0
        assert main(["export", str(tmp_path / "run"), "--format", "trl-preference", "--output",
                     str(tmp_path / "pairs")]) == 0
    finally:
        proc.kill()
        proc.wait()
