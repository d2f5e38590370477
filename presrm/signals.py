"""Stop signals while a command runs: SIGTERM raises :class:`Terminated`, SIGINT (Ctrl-C) KeyboardInterrupt, so
a run unwinds (no temporary file left) and the CLI says in one line how to resume.

Python drops an exception raised inside a finalizer (``Exception ignored in ... __del__``): a Ctrl-C that lands
in garbage collection would be lost and the run would go on (seen in tests/test_resume_kill.py). So the handler
raises again every :data:`REDELIVER_S` seconds (SIGALRM) until the command has unwound
(:func:`restore_signals`), or until the stop has been turned into another error on its way out
(:func:`turned_into`: a lost rank under ``accelerate launch``, presrm.loop).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

REDELIVER_S = 0.25
"""How soon a stop signal is raised again while it has not unwound the command."""


class Terminated(BaseException):
    """SIGTERM arrived (a cluster's time limit, ``kill``): unwinds like Ctrl-C, so no temporary file is left."""


_holding = False
"""True while :func:`turned_into` decides what a stop becomes: a SIGTERM (or its re-delivery) then raises
nothing and only keeps the re-delivery armed."""


def _stopper(exc: type[BaseException]):
    """A signal handler that raises ``exc`` and, until the command has unwound, raises it again every
    :data:`REDELIVER_S` seconds."""
    def handler(signum, frame) -> None:
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)
        if _holding and exc is Terminated:
            return  # turned_into is deciding; the re-delivery raises it afterwards if nothing was decided
        raise exc
    return handler


def stop_on_signals() -> dict[int, Any]:
    """Install the handlers (SIGTERM -> :class:`Terminated`, SIGINT -> KeyboardInterrupt). A SIGINT ignored by
    whoever started us (a background job of a shell without job control) stays ignored. Returns the handlers to
    restore; none off the main thread, where Python cannot install one.

    >>> previous = stop_on_signals()
    >>> sorted(previous) == sorted([signal.SIGTERM, signal.SIGINT]) or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    True
    >>> restore_signals(previous)
    """
    previous: dict[int, Any] = {}
    for sig, exc in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        try:
            previous[sig] = signal.signal(sig, _stopper(exc))
        except ValueError:
            break
    return previous


def landed() -> None:
    """The stop has reached code that unwinds with another error (it was turned into one): raise it no more."""
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def turned_into(decide: Callable[..., BaseException | None], *args: Any) -> BaseException | None:
    """Call ``decide(*args)`` (what a stop, or another error, should become) with SIGTERM and its re-delivery
    held, and return its answer. An answer means the stop has landed: the re-delivery is cancelled, so the
    answer is what unwinds, whatever SIGTERM came meanwhile (a launcher stopping every rank). No answer: a
    SIGTERM that came meanwhile is raised by the re-delivery within :data:`REDELIVER_S`. Ctrl-C is never held.

    Without the hold, a re-delivery due while ``decide`` runs (it takes longer than :data:`REDELIVER_S` on a
    loaded machine) would raise inside it, and the run would end with "terminated (SIGTERM)" instead of the error
    that says more (seen in tests/test_rank_failure.py). The hold is a flag the Python-level handler reads, not a
    blocked signal mask: a process-directed signal goes to any thread that does not block it (torch's, a
    progress bar's), and Python runs the handler on the main thread all the same.
    """
    global _holding
    if threading.current_thread() is not threading.main_thread():
        return decide(*args)
    held, _holding = _holding, True
    try:
        answer = decide(*args)
    finally:
        _holding = held
    if answer is not None:
        landed()
    return answer


def restore_signals(previous: dict[int, Any]) -> None:
    """The command has unwound: no more re-delivery, and the handlers it found are back."""
    if previous:
        landed()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
