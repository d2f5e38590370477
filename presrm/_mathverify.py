"""The LaTeX and symbolic fallback of ``answers_match``: math-verify, bounded in time in any thread.

math-verify (latex2sympy + sympy) evaluates what it parses, so hostile text can
run for minutes (``\\binom{10000000}{5000000}``). Its own timeouts use
``signal.alarm``, which works only in the main thread, and no signal stops C
code (gmpy2) even there. Two layers bound it instead:

1. :func:`mv_safe` lets only short, shallow answers through: at most
   :data:`MAX_MV_CHARS` characters, brackets balanced and at most
   :data:`MAX_MV_DEPTH` deep, numbers of at most ``MAX_DIGITS`` digits, LaTeX
   commands from :data:`SAFE_COMMANDS` only, and no factorial, binomial, large
   or nested power, big exponent or big operator.
2. math-verify itself runs in a worker process (:mod:`presrm._mv_worker`; one
   per concurrent caller, kept for reuse). A call that overruns
   :data:`MV_TIMEOUT_S` kills its worker and counts as no match; the next call
   starts a fresh one.

The first call in a process waits for a worker to start (about a second, at
most :data:`STARTUP_TIMEOUT_S`); after that, every call returns within
:data:`MV_TIMEOUT_S` plus the time to pass one line each way.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from sympy import Rational

from presrm._numbers import MAX_DIGITS

logger = logging.getLogger(__name__)

MV_TIMEOUT_S = 1.0
"""Wall-clock bound on one math-verify call (parse and verify), enforced by killing its worker."""
STARTUP_TIMEOUT_S = 120.0
"""How long a call waits for a new worker to import math-verify before giving up (no match)."""
MAX_MV_CHARS = 100
"""Longest answer handed to math-verify."""
MAX_MV_DEPTH = 4
"""Deepest bracket nesting handed to math-verify."""
MAX_IDLE_WORKERS = 4
"""Idle workers kept for reuse; more concurrent callers start more, which exit after their call."""
SAFE_COMMANDS = frozenset({
    "frac", "dfrac", "tfrac", "sqrt", "cdot", "times", "div", "pm", "pi", "left", "right", "text", "mathrm",
    "textbf", "mathbf", "boxed", "fbox", "displaystyle", "circ", "degree", "percent", "dollar",
})
"""The LaTeX commands an answer may use to reach math-verify; any other (``\\binom``, ``\\sum``, ...) never does."""

_UNSAFE = re.compile(
    rf"!|\*\*|\^[^^]*\^|\^\s*\{{?\s*[-+]?[0-9]{{4,}}|[0-9]{{{MAX_DIGITS + 1},}}|[0-9.][eE]\s*[-+]?\s*[0-9]{{4,}}"
    r"|binom|choose|factorial|gamma"
)
_COMMAND = re.compile(r"\\([A-Za-z]+)")


def mv_safe(text: str) -> bool:
    """Whether ``text`` is small and tame enough to hand to math-verify (see the module docstring).

    >>> mv_safe("\\\\frac{3}{4}"), mv_safe("\\\\binom{10000000}{5000000}"), mv_safe("10^{10^{10}}")
    (True, False, False)
    """
    if len(text) > MAX_MV_CHARS or _UNSAFE.search(text):
        return False
    if any(name not in SAFE_COMMANDS for name in _COMMAND.findall(text)):
        return False
    depth = 0
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0 or depth > MAX_MV_DEPTH:
            return False
    return depth == 0


def as_math(text: str) -> str:
    """Wrap bare LaTeX in ``$...$`` so math-verify's LaTeX extractor sees it."""
    return text if re.search(r"\$|\\[(\[]|\\boxed", text) else f"${text}$"


class _Worker:
    """One math-verify child process and a thread that turns its stdout into a queue of replies."""

    def __init__(self) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "presrm._mv_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     encoding="utf-8", env=env)
        self.replies: queue.Queue[str] = queue.Queue()
        self.ready = False
        threading.Thread(target=self._read, name="presrm-mathverify-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put("")  # end of output: the worker exited or was killed

    def _reply(self, timeout: float) -> dict:
        line = self.replies.get(timeout=timeout)  # queue.Empty on timeout
        if not line:
            raise EOFError("math-verify worker exited")
        return json.loads(line)

    def call(self, request: dict, timeout: float) -> bool:
        if not self.ready:
            self.ready = bool(self._reply(STARTUP_TIMEOUT_S).get("ready"))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return bool(self._reply(timeout)["match"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class _Pool:
    """Idle workers, shared by threads: a call takes one (or starts one) and gives it back when done."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _take(self) -> _Worker:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's workers are not ours to use
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return _Worker()

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < MAX_IDLE_WORKERS:
                self._idle.append(worker)
                return
        worker.kill()

    def match(self, request: dict, timeout: float) -> bool:
        worker = self._take()
        try:
            result = worker.call(request, timeout)
        except (queue.Empty, EOFError, OSError, ValueError, KeyError):
            logger.debug("math-verify gave no answer within %.1f s on %r; worker restarted", timeout, request)
            worker.kill()
            return False
        self._give(worker)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_POOL = _Pool()
atexit.register(_POOL.close)


def math_verify_match(pred: str, gold: str, gold_value: Rational | None) -> bool:
    """math-verify's verdict on LaTeX or symbolic ``pred`` against ``gold``, bounded in time in any thread.

    ``gold_value`` is the gold answer's exact value when it is a plain number
    (then ``gold`` itself is not parsed). Answers :func:`mv_safe` refuses, and
    calls that overrun :data:`MV_TIMEOUT_S`, do not match.
    """
    if not mv_safe(pred) or (gold_value is None and not mv_safe(gold)):
        return False
    exact = None if gold_value is None else [int(gold_value.p), int(gold_value.q)]
    return _POOL.match({"pred": as_math(pred), "gold": as_math(gold), "gold_value": exact}, MV_TIMEOUT_S)
