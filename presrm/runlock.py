"""One run per run directory: an exclusive lock on ``<run>/.lock`` while a run (or a reproduction arm) writes.

The lock is the kernel's (``fcntl.flock``): it is released when its process ends, however it ends, so a run
killed with ``kill -9`` leaves a lock file that the next run finds free and takes over; the file names the
holder (pid, host, start time) for the message a refused run prints. Reading a run (``presrm report``,
``compare``, ``export``) takes no lock.

>>> import tempfile
>>> with RunLock(Path(tempfile.mkdtemp())) as held:
...     sorted(held.holder())
['host', 'pid', 'started']
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from presrm.errors import RunStateError

log = logging.getLogger(__name__)

LOCK = ".lock"


class RunLock:
    """Hold ``root/.lock`` for the life of a ``with`` block; a second holder is refused at once (RunStateError)."""

    def __init__(self, root: Path) -> None:
        self.root, self.path, self.fd = Path(root), Path(root) / LOCK, None

    def holder(self) -> dict[str, Any]:
        """Who holds (or last held) the lock, as its file says; empty when unreadable."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> RunLock:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise RunStateError(f"{self.root} is in use by another presrm run (pid {h.get('pid', '?')} on host "
                                f"{h.get('host', '?')}, since {h.get('started', '?')}); wait for it to end, or "
                                "choose another name=... / output_dir=...") from None
        previous = self.holder()
        if previous:  # the kernel freed the lock: its holder ended without releasing it (killed, crashed)
            log.info("run lock: taking over %s, left by pid %s on %s", self.path, previous.get("pid"),
                     previous.get("host"))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # released cleanly: nobody to name
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
