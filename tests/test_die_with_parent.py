"""presrm.engines.vllm's parent-death wrapper (no vLLM needed): one per interpreter, and a process started
through it ends when its parent is killed with ``kill -9``. tests/test_resume_kill_vllm.py checks the same with
vLLM's own processes, in ``make test-vllm``."""

import os
import signal
import subprocess
import sys
import time

import pytest

from presrm.dist import _ended
from presrm.engines import vllm as engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.argv[1], "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    return not _ended(pid)


def test_one_wrapper_per_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    mine = engine._spawn_wrapper()
    shebang = f"#!{sys.executable}\n"
    assert mine.read_text().startswith(shebang) and os.access(mine, os.X_OK)
    monkeypatch.setattr(sys, "executable", "/another/venv/bin/python")
    theirs = engine._spawn_wrapper()
    assert theirs != mine and theirs.read_text().startswith("#!/another/venv/bin/python\n")
    assert mine.read_text().startswith(shebang)  # the other venv's wrapper left this one as it was


def test_a_child_started_through_the_wrapper_dies_with_its_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("PRESRM_CACHE_DIR", str(tmp_path))
    wrapper = engine._spawn_wrapper()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(wrapper)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the child outlived its parent's kill -9"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
