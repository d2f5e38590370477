"""presrm.signals: a stop turned into another error on its way out unwinds as that error, however long the
decision takes and whatever stops arrive meanwhile; undecided, the stop goes on as usual."""

import os
import signal
import threading
import time

import pytest

from presrm.signals import REDELIVER_S, Terminated, landed, restore_signals, stop_on_signals, turned_into


@pytest.fixture(params=["main thread only", "another thread running"])
def handlers(request):
    """The handlers installed; with another thread running, the kernel may hand it the signals (as torch's and a
    progress bar's threads are handed them in a run), so a mask on the main thread alone would not hold them."""
    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)
    if request.param == "another thread running":
        other.start()
    previous = stop_on_signals()
    yield
    restore_signals(previous)
    done.set()


def _terminated() -> Terminated:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode, long before this ends
    except Terminated as e:
        return e
    raise AssertionError("SIGTERM raised nothing")


def _slow_decision(answer, second_sender=True):
    def decide():
        if second_sender:  # the launcher stopping every rank
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(4 * REDELIVER_S)  # a re-delivery falls due meanwhile
        return answer
    return decide


def test_a_decided_stop_unwinds_as_the_answer(handlers):
    _terminated()
    lost = RuntimeError("rank 1 was lost")
    assert turned_into(_slow_decision(lost)) is lost
    time.sleep(4 * REDELIVER_S)  # nothing pending, nothing re-delivered: no Terminated here


def test_an_undecided_stop_goes_on(handlers):
    _terminated()
    try:
        turned_into(_slow_decision(None, second_sender=False))
        time.sleep(4 * REDELIVER_S)
        raised = False
    except Terminated:  # the held SIGTERM (or the re-delivery) arrives once the hold ends
        landed()
        raised = True
    assert raised
