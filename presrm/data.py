"""Tasks (declarative YAML files) and the problems they load.

A task says where its data is (local JSONL paths tried in order, then a hub
dataset), how to map fields, how to read the gold answer, and the prompt the
policy sees. See ``tasks/gsm8k.yaml``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from presrm.errors import ConfigError, DataError
from presrm.jsonio import iter_jsonl
from presrm.schema import Problem

log = logging.getLogger(__name__)

REPO_TASKS = Path(__file__).resolve().parent.parent / "tasks"
_ENV = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    prompt: str
    source_file: str
    description: str = ""
    paths: tuple[str, ...] = ()
    hf_dataset: str | None = None
    hf_config: str | None = None
    split: str = "test"
    fields: dict[str, str | None] = field(default_factory=dict)
    answer_format: str = "gsm8k"
    response_prefix: str = ""
    stop: tuple[str, ...] = ()

    def protocol(self) -> dict[str, Any]:
        """What an evaluation records so that its figure can be reproduced."""
        return {"task": self.name, "version": self.version, "prompt": self.prompt, "shots": 0,
                "response_prefix": self.response_prefix, "stop": list(self.stop)}


def tasks_dir(override: str | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("PRESRM_TASKS_DIR")
    return Path(env) if env else REPO_TASKS


def load_task(name_or_path: str, tasks_dir_override: str | None = None) -> Task:
    """Load a task by name (``tasks/<name>.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if not (p.suffix in {".yaml", ".yml"} and p.is_file()):
        p = tasks_dir(tasks_dir_override) / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in tasks_dir(tasks_dir_override).glob("*.yaml"))
        raise ConfigError(f"task {name_or_path!r} not found (looked for {p}; known tasks: {known})")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from e
    allowed = {"name", "version", "description", "data", "fields", "answer_format", "prompt",
               "response_prefix", "stop"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{p}: key '{key}' is not a task setting (known: {sorted(allowed)})")
    for key in ("name", "version", "prompt"):
        if key not in raw:
            raise ConfigError(f"{p}: missing required key '{key}'")
    data = raw.get("data") or {}
    fmt = raw.get("answer_format", "gsm8k")
    if fmt not in {"gsm8k", "plain"}:
        raise ConfigError(f"{p}: key 'answer_format' must be 'gsm8k' or 'plain', got {fmt!r}")
    return Task(
        name=str(raw["name"]), version=int(raw["version"]), prompt=str(raw["prompt"]), source_file=str(p),
        description=str(raw.get("description", "")), paths=tuple(data.get("paths") or ()),
        hf_dataset=data.get("hf_dataset"), hf_config=data.get("hf_config"), split=str(data.get("split", "test")),
        fields={"id": None, "question": "question", "answer": "answer", **(raw.get("fields") or {})},
        answer_format=fmt, response_prefix=str(raw.get("response_prefix", "")),
        stop=tuple(raw.get("stop") or ()),
    )


def _expand(path: str, base: Path) -> Path | None:
    """Expand ``${VAR}``; a path naming an unset variable is skipped (None)."""
    if any(v not in os.environ for v in _ENV.findall(path)):
        return None
    p = Path(_ENV.sub(lambda m: os.environ[m.group(1)], path)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def gold_answer(raw: str, fmt: str, where: str) -> str:
    """The final answer from a gold field: after '####' for GSM8K, the whole field for 'plain'."""
    if fmt == "gsm8k":
        if "####" not in raw:
            raise DataError(f"{where}: gold answer has no '#### N' line")
        raw = raw.rsplit("####", 1)[1]
    ans = raw.strip().replace(",", "")
    if not ans:
        raise DataError(f"{where}: empty gold answer")
    return ans


def _problem(task: Task, rec: dict[str, Any], index: int, where: str) -> Problem:
    f = task.fields
    for key in ("question", "answer"):
        if f[key] not in rec:
            raise DataError(f"{where}: missing key {f[key]!r} (keys present: {sorted(rec)})")
    question, answer = rec[f["question"]], rec[f["answer"]]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: key {f['question']!r} must be a non-empty string")
    answer = str(answer)
    pid = str(rec[f["id"]]) if f.get("id") and f["id"] in rec else f"{task.name}-{index}"
    return Problem(id=pid, question=question.strip(), answer=gold_answer(answer, task.answer_format, where),
                   solution=answer if task.answer_format == "gsm8k" else None, source=task.name)


def _load_hub(task: Task) -> list[dict[str, Any]]:
    if not task.hf_dataset:
        raise DataError(f"task {task.name}: none of its data paths exist ({list(task.paths)}) and it names "
                        "no hf_dataset; pass a data file or fix the task's data.paths")
    import datasets

    try:
        ds = datasets.load_dataset(task.hf_dataset, task.hf_config, split=task.split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for "offline"/"not found"
        raise DataError(
            f"task {task.name}: no local data file found ({list(task.paths)}) and the hub dataset "
            f"{task.hf_dataset!r} could not be loaded ({type(e).__name__}: {str(e)[:200]}). Offline, point "
            "PRESRM_DATA_DIR at a folder with gsm8k/{{train,test}}.jsonl or pass a data file."
        ) from e
    return [dict(r) for r in ds]


def load_problems(task: Task, *, limit: int | None = None, offset: int = 0,
                  data_file: str | None = None) -> list[Problem]:
    """Problems ``offset .. offset+limit`` of a task, from a local JSONL file or the hub."""
    base = Path(task.source_file).parent
    candidates = [Path(data_file)] if data_file else [p for p in (_expand(x, base) for x in task.paths) if p]
    local = next((p for p in candidates if p.is_file()), None)
    if data_file and local is None:
        raise DataError(f"data file {data_file} does not exist")
    stop = None if limit is None else offset + limit
    out: list[Problem] = []
    if local is not None:
        log.info("Task %s: reading %s", task.name, local)
        for i, (n, rec) in enumerate(iter_jsonl(local)):
            if i < offset:
                continue
            if stop is not None and i >= stop:
                break
            out.append(_problem(task, rec, i, f"{local}:{n}"))
        return out
    rows = _load_hub(task)
    for i, rec in enumerate(rows[offset:stop], start=offset):
        out.append(_problem(task, rec, i, f"{task.hf_dataset}[{task.split}][{i}]"))
    return out
