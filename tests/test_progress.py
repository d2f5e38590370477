"""Progress bars: unchanged on a terminal; in a log throttled, ASCII, one bar and at most one heartbeat line."""

import io
import os

import pytest

from presrm import progress
from presrm.progress import LOG_INTERVAL_S, bar, configure


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("stream", "interactive"), [(Terminal(), True), (io.StringIO(), False)])
def test_bars_on_a_terminal_and_in_a_log(stream, interactive):
    outer = bar(total=100, desc="stages", file=stream)
    inner = bar(total=10, desc="batches", file=stream, leave=False)
    innermost = bar(total=3, desc="judge", file=stream, leave=False)
    assert not outer.disable and not inner.disable
    assert innermost.disable is not interactive  # in a log: one heartbeat at a time
    assert (outer.mininterval == LOG_INTERVAL_S) is not interactive
    inner.update(10)
    for b in (innermost, inner, outer):
        b.close()
    assert ("batches" in stream.getvalue()) is interactive  # in a log the heartbeat writes log records instead
    after = bar(total=10, desc="next stage", file=stream)  # the outer bar is closed: this one is outermost
    assert not after.disable
    after.close()
    assert "next stage" in stream.getvalue()


def test_a_log_gets_a_few_lines_not_one_per_update():
    log = io.StringIO()
    outer = bar(total=10_000, desc="search", file=log)
    for _ in range(10_000):
        inner = bar(total=1, desc="judge batch", file=log)
        inner.update(1)
        inner.close()
        outer.update(1)
    outer.close()
    redraws = log.getvalue().replace("\r", "\n").strip().splitlines()
    assert 1 <= len(redraws) <= 3, redraws  # first draw, maybe one more, and the final one
    assert all("judge batch" not in line for line in redraws)


def test_configure_sets_tqdm_defaults_only_for_a_log(monkeypatch):
    for key in ("TQDM_MININTERVAL", "TQDM_MAXINTERVAL", "TQDM_ASCII", "TQDM_POSITION"):
        monkeypatch.delenv(key, raising=False)
    configure(Terminal())
    assert "TQDM_MININTERVAL" not in os.environ
    configure(io.StringIO())
    assert float(os.environ["TQDM_MININTERVAL"]) == LOG_INTERVAL_S == float(os.environ["TQDM_MAXINTERVAL"])
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    configure(io.StringIO())
    assert os.environ["TQDM_MININTERVAL"] == "5"  # a user's own setting wins


def test_stderr_that_cannot_say_is_no_terminal():
    closed = io.StringIO()
    closed.close()
    assert not progress.interactive(closed) and not progress.interactive(object())


def test_a_library_bar_follows_the_same_rule():
    """vLLM's own bar (use_tqdm) draws on a terminal or alone; in a log inside a presrm bar it is a heartbeat
    factory under the caller's label; inside a heartbeat, none (vLLM cannot take a disabled bar)."""
    log = io.StringIO()
    assert progress.library_bar("gen", Terminal()) is True and progress.library_bar("gen", log) is True
    assert progress.library_bar(None, Terminal()) is False
    outer = bar(total=3, desc="stages", file=log)
    assert progress.library_bar("gen", Terminal()) is True
    factory = progress.library_bar("M3 eval: greedy", log)
    assert callable(factory)
    pbar = factory(total=5, desc="Processed prompts", dynamic_ncols=True, postfix="est. speed input: 0 toks/s")
    assert not pbar.disable and pbar.desc == "M3 eval: greedy" and pbar.unit == "prompt"
    assert pbar.format_dict["elapsed"] >= 0  # vLLM reads it
    assert progress.library_bar("inner", log) is False
    pbar.close()
    outer.close()
    assert progress.library_bar("gen", log) is True


def test_a_heartbeat_logs_a_line_per_interval_and_short_work_none(monkeypatch, caplog):
    import time

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.05)
    caplog.set_level("INFO", logger="presrm.progress")
    stream = io.StringIO()
    outer = bar(total=1, desc="run [M3 eval]", file=stream)
    for _ in range(50):  # short work: never a line
        quick = bar(total=2, desc="judge batch", file=stream)
        quick.update(2)
        quick.close()
    assert not caplog.records
    slow = bar(total=4, desc="M3 eval: greedy", unit="problem", file=stream)
    for _ in range(4):
        time.sleep(0.08)
        slow.update(1)
    slow.close()
    outer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 5, lines
    assert all(line.startswith("M3 eval: greedy: ") and "\r" not in line and "\x1b" not in line for line in lines)
    assert lines[-1].startswith("M3 eval: greedy: 100% (4/4 problem) [")
    assert "greedy" not in stream.getvalue() and "judge batch" not in stream.getvalue()


def test_no_library_bar_where_bars_are_disabled(monkeypatch):
    """Ranks > 0 of a launch (TQDM_DISABLE): vLLM gets use_tqdm=False even on a terminal (its disabled bar's
    elapsed time is 0, and vLLM divides by it)."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress.library_bar("gen", Terminal()) is False and progress.library_bar("gen", io.StringIO()) is False


LIBRARY_BARS = """
import sys, time
from presrm.progress import bar, configure
configure()  # what the CLI does first; stderr is a pipe here
from tqdm.auto import tqdm
stage = bar(total=2, desc="run [stage]")
for name in ("Loading weights", "train"):  # transformers' and the trainer's bars, nested in a stage
    with tqdm(total=50, desc=name, leave=False) as b:
        for _ in range(50):
            b.update(1)
    stage.update(1)
with tqdm(total=4, desc="map") as b:  # a library bar left on screen
    b.update(4)
stage.close()
"""


def test_a_log_gets_no_escape_code_and_ascii_bars():
    """Library bars nested in presrm's stage bar, in a process whose stderr is no terminal (a log)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    err = subprocess.run([sys.executable, "-c", LIBRARY_BARS], capture_output=True, text=True, env=env,
                         check=True).stderr
    assert "\x1b" not in err, repr(err)
    assert "Loading weights" in err and "map: 100%|##########| 4/4" in err, err
    bars = [line.split("|")[1] for line in err.replace("\r", "\n").splitlines() if line.count("|") >= 2]
    assert bars and all(set(b) <= set(progress.ASCII_BAR) for b in bars), bars
