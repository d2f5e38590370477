"""A rank killed (``kill -9``) under ``accelerate launch``: the run stops within a minute, with one line naming the
lost rank and the stage, and ``--resume`` ends where an uninterrupted run ends.

Two CPU processes over gloo (configs/accelerate/ddp.yaml, as tests/test_accelerate.py) run the smoke recipe on the
tiny model; rank 1 is killed when rank 0 logs the start of M0's evaluation, iteration 0's step search or its
training. What stops rank 0 is whichever comes first: its next collective failing (gloo notices a closed
connection at once) or the launcher's SIGTERM (torchrun's elastic agent stops every worker when one ends);
presrm turns either into ``presrm: error: rank 1 was lost during stage "..."`` (:func:`presrm.dist.rank_lost`).
Without a launcher to stop it (two processes started by hand, as on several machines), a rank already waiting in
a barrier, gather or broadcast when its peer dies stops within seconds, not at the collective's 3 hour timeout.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from presrm.jsonio import read_jsonl
from tests.test_accelerate import ACCELERATE, ACCELERATE_BIN, ROOT, SMOKE, _port
from tests.test_resume_kill import _wait_for

STAGES = {"eval": "M0 eval", "search": "iter 0/1 search", "train": "iter 0/1 train"}
LIMIT_S = 60  # the promise: the survivor exits within this many seconds of the kill


def _overrides(model_dir, data, out):
    # M0 evaluated (the eval stage to kill in), one iteration, everything as small as it goes
    return [f"model={model_dir}", f"output_dir={out}", "name=t", "device=cpu", f"search.data_file={data}",
            f"eval.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=2",
            "search.max_steps=2", "search.max_step_tokens=6", "search.temperature=1.0", "search.deterministic=true",
            "judge.both_orders=false", "judge.tie_margin=0", "train.max_steps=1", "train.batch_size=2",
            "train.lora_r=2", "train.lora_alpha=4", "eval.limit=2", "eval.max_new_tokens=4", "eval.batch_size=1"]


def _launch(overrides, log, *flags):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [str(ACCELERATE_BIN), "launch", "--config_file", str(ACCELERATE / "ddp.yaml"), "--num_processes", "2",
           "--main_process_port", str(_port()), "-m", "presrm", "train", "--config", str(SMOKE), *flags, *overrides]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker with ``RANK=rank`` that the launcher started (its child, on Linux's /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().rpartition(")")[2].split()[1]) != launcher:
                continue
            if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # ended meanwhile
            continue
    raise AssertionError(f"no rank {rank} among the launcher's children")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_killed_rank_stops_the_run_with_one_line(tiny_model_dir, gsm8k_like, tmp_path, stage):
    label = STAGES[stage]
    overrides = _overrides(tiny_model_dir, gsm8k_like, tmp_path / "runs")
    log = tmp_path / "killed.log"
    with log.open("w") as f:
        proc = _launch(overrides, f)
        try:
            _wait_for(f"stage start: {label}", log, proc, timeout=300)
            os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
            killed = time.monotonic()
            code = proc.wait(timeout=LIMIT_S + 30)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text(errors="replace")
    print(f"{stage}: the launcher exited {code} {took:.1f} s after the kill")
    assert code != 0 and took < LIMIT_S, f"exit {code} after {took:.1f} s\n{text[-4000:]}"
    line = f'presrm: error: rank 1 was lost during stage "{label}" (it exited or was killed); rerun with --resume'
    assert text.count(line) == 1, text[-4000:]
    assert f"stage done: {label}" not in text  # killed inside the stage, not after it

    if stage != "search":  # one resume is enough (each launch costs ~30 s): search is redone, then everything after
        return
    with log.open("a") as f:
        resumed = _launch(overrides, f, "--resume")
        assert resumed.wait(timeout=600) == 0, log.read_text(errors="replace")[-4000:]
    with (tmp_path / "ref.log").open("w") as f:  # the same launch, never interrupted
        ref = _launch(_overrides(tiny_model_dir, gsm8k_like, tmp_path / "ref"), f)
        assert ref.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text(errors="replace")[-4000:]
    got, want = tmp_path / "runs" / "t", tmp_path / "ref" / "t"
    assert read_jsonl(want / "iter_0" / "pairs.jsonl"), "no pairs: the comparison would be empty"
    for name in ("iter_0/pairs.jsonl", "iter_0/samples.jsonl", "iter_0/eval_before_samples.jsonl",
                 "iter_0/eval_samples.jsonl"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), f"{name} differs after --resume"


# Rank 1 joins and sleeps; rank 0 announces it is about to wait, then waits in the collective inside a "stage".
WAITER = """
import os, sys, time
from presrm import dist
from presrm.loop import Progress, _staged
dist.init()
if dist.rank() == 1:
    time.sleep(600)
ops = {"barrier": dist.barrier, "gather": lambda: dist.gather([1]), "broadcast": lambda: dist.broadcast(1)}
print("waiting", flush=True)
_staged(Progress([], "t"), "probe", lambda: (ops[sys.argv[1]](), False))
"""


@pytest.mark.parametrize("op", ["barrier", "gather", "broadcast"])
def test_a_rank_waiting_in_a_collective_stops_when_its_peer_dies(tmp_path, op):
    """No launcher: nothing sends SIGTERM, so what stops rank 0 is its own collective failing (gloo's "Connection
    closed by peer") and presrm naming the rank whose process ended."""
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port()),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    procs = [subprocess.Popen([sys.executable, str(script), op],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        assert procs[0].stdout.readline().strip() == "waiting", procs[0].communicate()[1][-3000:]
        time.sleep(1.0)  # rank 0 is inside the collective by now
        procs[1].kill()
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=LIMIT_S)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert took < 10 and procs[0].returncode != 0, (took, err[-3000:])
    assert 'RankLostError: rank 1 was lost during stage "probe" (it exited or was killed)' in err, err[-3000:]
