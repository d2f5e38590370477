"""Progress bars: live on a terminal, a few plain lines in a log.

Every bar presrm draws comes from :func:`bar`; :func:`configure`, which the CLI
calls first, sets tqdm's defaults for the libraries' own bars too
(transformers' trainer, datasets, the hub) through tqdm's ``TQDM_*``
environment variables. Where stderr is a terminal nothing changes. Where it is
not (CI, ``nohup``, a cluster job's log file), where each redraw would become a
line of its own:

* a bar redraws at most every :data:`LOG_INTERVAL_S` seconds (plus once when
  its label changes or it closes), in ASCII;
* only the outermost presrm bar is drawn as a bar. The ``stage start:`` /
  ``stage done:`` log lines say where a run is;
* a bar opened while the outermost one is live (a stage's evaluation, its step
  search, vLLM's requests: :func:`library_bar`) becomes a **heartbeat**: one
  plain log line (``presrm.progress``: label, percentage, count, elapsed and
  time left) at most every :data:`LOG_INTERVAL_S` seconds, and none at all when
  it ends sooner. One heartbeat at a time: bars opened inside it stay silent
  (judge batches inside step search), so a 10-minute evaluation inside a
  run's stage logs about 20 lines, and 10,000 short batches log none.

>>> import io
>>> b = bar(total=3, desc="demo", file=io.StringIO())  # not a terminal
>>> inner = bar(total=2, desc="inner", file=io.StringIO())
>>> b.mininterval == LOG_INTERVAL_S, inner.disable, inner.delay == LOG_INTERVAL_S  # a heartbeat
(True, False, True)
>>> bar(total=2, desc="innermost", file=io.StringIO()).disable
True
>>> inner.close(); b.close()
"""

from __future__ import annotations

import logging
import os
import re
import sys
import weakref
from collections.abc import Iterable
from typing import Any, TextIO

LOG_INTERVAL_S = 30.0
"""Least time between two redraws of a bar when stderr is not a terminal."""

ASCII_BAR = " 123456789#"
"""tqdm's ASCII bar characters (what ``ascii=True`` draws)."""

HEARTBEAT_FORMAT = "{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt} {unit}) [{elapsed}<{remaining}{postfix}]"
"""A heartbeat's line: no bar, nothing that needs a terminal."""

log = logging.getLogger(__name__)
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal's control sequence (tqdm's cursor moves)
_live: weakref.WeakSet = weakref.WeakSet()  # presrm's open bars (a closed tqdm bar has disable=True)
_beats: weakref.WeakSet = weakref.WeakSet()  # the open heartbeats (at most one)


class _LogLines:
    """A file for tqdm that makes each redraw one log record: no carriage return, no escape code."""

    def write(self, text: str) -> None:
        line = _ESCAPE.sub("", text).replace("\r", "").strip()
        if line:
            log.info("%s", line)

    def flush(self) -> None:
        pass


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal that redraws a bar in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def configure(stream: TextIO | None = None) -> None:
    """Log-friendly defaults for every tqdm bar of the process, when ``stream`` (stderr) is no terminal.

    tqdm reads ``TQDM_*`` variables when it is first imported, so this runs before
    anything imports it (the CLI calls it first); variables already set win.
    """
    if interactive(stream):
        return
    # TQDM_ASCII is read as the bar's characters, not a flag ("True" drew bars of T, r, u and e), so it gets
    # tqdm's own ASCII set; position 0 keeps a nested library bar (the trainer's inside a stage) from moving
    # the cursor up a line, an escape code that a log would keep.
    for key, value in (("TQDM_MININTERVAL", LOG_INTERVAL_S), ("TQDM_MAXINTERVAL", LOG_INTERVAL_S),
                       ("TQDM_ASCII", ASCII_BAR), ("TQDM_POSITION", 0)):
        os.environ.setdefault(key, str(value))


def bars_disabled() -> bool:
    """Whether bars are off in this process (``TQDM_DISABLE``: ranks > 0 of a launch, or the user's choice)."""
    return os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true"}


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
        unit: str = "it", disable: bool = False, leave: bool = True, file: TextIO | None = None, **kwargs: Any):
    """A tqdm bar: as asked on a terminal; in a log, throttled, a heartbeat inside the outermost live bar and
    silent inside a heartbeat.

    ``file`` defaults to stderr; the other arguments are tqdm's.
    """
    from tqdm.auto import tqdm

    disable = disable or bars_disabled()
    beat = False
    if not interactive(file):
        kwargs.update(mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ascii=True, dynamic_ncols=False)
        if not disable and _is_live(_live):
            beat = not _is_live(_beats)
            disable = not beat
        if beat:
            kwargs.update(delay=LOG_INTERVAL_S, bar_format=HEARTBEAT_FORMAT, position=0)  # no cursor moves
            file = _LogLines()  # type: ignore[assignment]
    made = tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file, **kwargs)
    if not disable:
        (_beats if beat else _live).add(made)
    return made


def _is_live(bars: weakref.WeakSet) -> bool:
    return any(not b.disable for b in bars)


def library_bar(desc: str | None, stream: TextIO | None = None) -> bool | Any:
    """What to pass as a library's ``use_tqdm`` (vLLM's ``generate``) for work labelled ``desc``.

    False with no label or where bars are disabled (vLLM divides by a disabled bar's elapsed time, 0); True
    (the library's own bar) on a terminal or when no presrm bar is live; in a log inside a live presrm bar, a
    factory of :func:`bar` under ``desc`` (a heartbeat); False inside a heartbeat (no line from it).
    """
    if desc is None or bars_disabled():
        return False
    if interactive(stream) or not _is_live(_live):
        return True
    if _is_live(_beats):
        return False  # a bar inside a heartbeat would be disabled, and vLLM cannot take a disabled bar

    def factory(*args: Any, total: float | None = None, **kwargs: Any):
        kwargs.pop("desc", None)  # vLLM's "Processed prompts": the caller's label says more
        kwargs.pop("dynamic_ncols", None)
        return bar(*args, total=total, desc=desc, unit="prompt", **kwargs)

    return factory
