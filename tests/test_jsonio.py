"""The atomic writer: permissions like open(), and a failed write that leaves the previous file whole."""

import errno
import os
import stat

import pytest

from presrm import jsonio
from presrm.errors import PresrmError, WriteError
from presrm.jsonio import read_json, read_jsonl, write_json, write_jsonl, write_text_atomic


@pytest.fixture()
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666),
                                             (0o027, 0o640)])
@pytest.mark.parametrize("write", [lambda p: write_json(p, {"a": 1}), lambda p: write_jsonl(p, [{"a": 1}]),
                                   lambda p: write_text_atomic(p, "x")])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode, write):
    umask(mask)
    target = tmp_path / "sub" / "f.json"
    write(target)
    with open(tmp_path / "plain", "w") as f:  # what a plain open() gives under the same mask
        f.write("x")
    umask(0o022)
    assert _mode(target) == _mode(tmp_path / "plain") == mode


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    target = tmp_path / "report.json"
    write_json(target, {"v": 1})
    os.chmod(target, 0o640)
    umask(0o077)
    write_json(target, {"v": 2})
    assert _mode(target) == 0o640 and read_json(target) == {"v": 2}


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_write_that_fails_midway_leaves_the_previous_file(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "pairs.jsonl"
    write_jsonl(target, [{"n": 1}, {"n": 2}])
    before = target.read_bytes()

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_at == "write":
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            f.write = full_disk
            return f

        monkeypatch.setattr(jsonio.os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(jsonio.os, fail_at, full_disk)
    with pytest.raises(WriteError, match=r"pairs\.jsonl: cannot write \(No space left on device\)") as err:
        write_jsonl(target, [{"n": 3}])
    assert isinstance(err.value, PresrmError) and isinstance(err.value, OSError)
    monkeypatch.undo()
    assert target.read_bytes() == before and read_jsonl(target) == [{"n": 1}, {"n": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]  # no temporary file left


def test_a_folder_in_the_way_is_a_write_error(tmp_path):
    (tmp_path / "results.json").mkdir()
    with pytest.raises(WriteError, match="results.json: cannot write"):
        write_json(tmp_path / "results.json", {})
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot write"):
        write_json(tmp_path / "file" / "results.json", {})
