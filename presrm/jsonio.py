"""Atomic JSON/JSONL writing; strict JSONL, JSON and YAML reading with one-line errors naming file:line.

Every file a run writes goes through ``write_json``/``write_jsonl``: the data
lands in a temporary file in the same folder and is renamed into place, so a
crash never leaves a half-written file that a resumed run would trust, and a
failed write (a full disk) leaves the previous complete file in place.
Permissions are those a plain ``open(path, "w")`` would give: a new file gets
``0o666`` less the umask, a replaced one keeps its mode.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from presrm.errors import DataError, PresrmError, WriteError


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file next to ``path``, created like ``open()`` creates files (mode 0o666 & ~umask).

    ``tempfile.mkstemp`` would create it 0o600 whatever the umask, so nobody else could read run files.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")  # pragma: no cover - 2^32 names each try


def writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create the output folder ``path`` now, before any long work, and check that files can be written in it.

    ``what`` names the setting in the message (``--output-dir``, ``output_dir``).

    Raises:
        WriteError: ``path`` is a file, lies under a file, or cannot be created or written (read-only,
            no permission); nothing in it is changed.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise WriteError(f"{what} {p}: is a file, not a folder; choose a folder for the outputs")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = _open_temp(p / ".presrm-write-test")
        os.close(fd)
        probe.unlink()
    except OSError as e:
        raise WriteError(f"{what} {p}: cannot write there ({e.strerror or e})") from e
    return p


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk is full: ENOSPC, or a library's own wording of it (safetensors' Rust IoError)."""
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e) or "StorageFull" in str(e)


def space_note(e: BaseException, path: Path, needed: int) -> str:
    """For a full disk, how much the write needed and how much is free where ``path`` goes (else nothing).

    >>> space_note(OSError(errno.EACCES, "Permission denied"), Path("."), 10)
    ''
    """
    if not disk_full(e):
        return ""
    try:
        free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
    except (OSError, StopIteration):
        return f": it needs {_size(needed)}"
    return f": it needs {_size(needed)}, {_size(free)} free there; free some space and rerun with --resume"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} bytes"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and one rename.

    Raises:
        WriteError: the folder cannot be created or the file cannot be written (full disk, no permission,
            a folder in the way); the previous ``path``, if any, is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp(path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if path.is_file():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot write ({e.strerror or e}){space_note(e, path, len(text.encode()))}; "
                         "any previous version is unchanged") from e
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one JSON object per line, atomically; returns the number of records."""
    lines = [json.dumps(r.to_dict() if hasattr(r, "to_dict") else r, ensure_ascii=False) for r in records]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | os.PathLike, *, required: Iterable[str] = (),
               error: type[DataError] = DataError) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` from a JSONL file, skipping blank lines.

    Raises ``error`` (DataError or a subclass) naming the file and line for an
    unreadable file, a line that is not UTF-8, invalid JSON, a non-object line,
    or a missing required key.
    """
    required = tuple(required)
    p = Path(path)
    try:
        f = p.open("rb")  # decoded line by line, so that a bad byte is reported at its own line
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror or e})") from e
    with f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{p}:{n}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from e
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{p}:{n}: invalid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(rec, dict):
                raise error(f"{p}:{n}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise error(f"{p}:{n}: missing key {missing[0]!r} (keys present: {sorted(rec)})")
            yield n, rec


def read_jsonl(path: str | os.PathLike, *, required: Iterable[str] = ()) -> list[dict]:
    """Read a whole JSONL file (see ``iter_jsonl``)."""
    return [rec for _, rec in iter_jsonl(path, required=required)]


def yaml_problem(err: Exception) -> str:
    """What a YAML parser found wrong, on one line (PyYAML's own message spans several, with a caret)."""
    return " ".join(str(getattr(err, "problem", None) or err).split())


def _read_text(p: Path, error: type[PresrmError]) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_yaml(path: str | os.PathLike, *, error: type[PresrmError] = DataError) -> Any:
    """Parse a YAML file; raise ``error`` naming the file (and line) when it cannot be read, is not UTF-8,
    or is not YAML."""
    import yaml

    p = Path(path)
    text = _read_text(p, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise error(f"{p}:{line} invalid YAML ({yaml_problem(e)})") from e


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    text = _read_text(p, DataError)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from e
