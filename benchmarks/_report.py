"""Write one benchmark's figures into its own section of docs/BENCHMARKS.md.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and
``<!-- END name -->``; other sections are left untouched, so scripts can run
in any order and re-running one replaces only its own figures.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script named in it; re-run the script to refresh it.\n"
    "Figures are as measured, on the machine stated, with the command stated.\n"
)


def machine() -> str:
    """A one-line description of the machine the benchmark ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        tv = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        tv = "n/a"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {tv}"


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=DOC.parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line() -> str:
    """The command line as run, with the thread setting (``OMP_NUM_THREADS``) that shapes every timing."""
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + "python " + " ".join(sys.argv)


def write_section(name: str, body: str, *, command: str | None = None) -> None:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md with ``body``."""
    command = command or command_line()
    block = (
        f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n"
        f"_Machine: {machine()}. Commit: {git_rev()}. Command: `{command}`._\n"
        f"<!-- END {name} -->"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def publish(name: str, body: str, *, write: bool = True, command: str | None = None) -> None:
    """Print a benchmark's section, and unless ``write`` is false (``--no-write``) put it into BENCHMARKS.md."""
    sys.stdout.write(body.rstrip() + "\n")
    if write:
        write_section(name, body, command=command)
