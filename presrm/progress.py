"""Progress bars: live on a terminal, a few plain lines in a log.

Every bar presrm draws comes from :func:`bar`; :func:`configure`, which the CLI
calls first, sets tqdm's defaults for the libraries' own bars too
(transformers' trainer, datasets, the hub) through tqdm's ``TQDM_*``
environment variables. Where stderr is a terminal nothing changes. Where it is
not (CI, ``nohup``, a cluster job's log file), where each redraw would become a
line of its own:

* a bar redraws at most every :data:`LOG_INTERVAL_S` seconds (plus once when
  its label changes or it closes), in ASCII;
* only the outermost presrm bar is drawn: a bar opened while another one is
  live (generation batches inside a run's stage, judge batches inside step
  search) stays silent. The ``stage start:`` / ``stage done:`` log lines say
  where a run is.

>>> import io
>>> b = bar(total=3, desc="demo", file=io.StringIO())  # not a terminal
>>> b.mininterval == LOG_INTERVAL_S, bar(total=2, desc="inner", file=io.StringIO()).disable
(True, True)
>>> b.close()
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterable
from typing import Any, TextIO

LOG_INTERVAL_S = 30.0
"""Least time between two redraws of a bar when stderr is not a terminal."""

ASCII_BAR = " 123456789#"
"""tqdm's ASCII bar characters (what ``ascii=True`` draws)."""

_live: weakref.WeakSet = weakref.WeakSet()  # presrm's open bars (a closed tqdm bar has disable=True)


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


def shows_bar(stream: TextIO | None = None) -> bool:
    """Whether a library's own bar (vLLM's ``use_tqdm``) should be drawn now: never where bars are disabled
    (vLLM divides by a disabled bar's elapsed time, 0); always on a terminal; in a log only when no presrm bar
    is live, the same rule :func:`bar` applies to presrm's nested bars."""
    if bars_disabled():
        return False
    return interactive(stream) or not any(not b.disable for b in _live)


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
        unit: str = "it", disable: bool = False, leave: bool = True, file: TextIO | None = None, **kwargs: Any):
    """A tqdm bar: as asked on a terminal; in a log, throttled and silent inside another live bar.

    ``file`` defaults to stderr; the other arguments are tqdm's.
    """
    from tqdm.auto import tqdm

    disable = disable or bars_disabled()
    if not interactive(file):
        disable = disable or any(not b.disable for b in _live)
        kwargs.update(mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ascii=True, dynamic_ncols=False)
    made = tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file, **kwargs)
    if not disable:
        _live.add(made)
    return made
