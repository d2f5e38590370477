"""Tasks (declarative YAML files) and the problems they load.

A task says where its data is (local JSONL paths tried in order, then a hub
dataset), how to map fields, how to read the gold answer, and the evaluation
protocol: the prompt, whether the chat template wraps it, the shots, the stop
strings, the answer extractors and how an extracted answer is matched. See
``tasks/gsm8k.yaml`` (presrm's own protocol) and ``tasks/gsm8k_cot_zeroshot.yaml``
(lm-evaluation-harness's ``gsm8k_cot_zeroshot``, reproduced exactly).

>>> Extractor.from_spec("flexible", {"regex": "(-?[0-9]+)", "group_select": -1}, "t.yaml").extract("1 then 22")
'22'
>>> Match(kind="exact_match", ignore_case=True, regexes_to_ignore=(",",)).correct("1,000", "1000")
True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presrm.errors import ConfigError, DataError
from presrm.jsonio import iter_jsonl, read_yaml
from presrm.schema import Problem
from presrm.templating import Template, compile_template

log = logging.getLogger(__name__)

REPO_TASKS = Path(__file__).resolve().parent.parent / "tasks"
_ENV = re.compile(r"\$\{(\w+)\}")
REGEX_FALLBACK = "[invalid]"  # what lm-eval's regex filter returns when nothing matches


@dataclass(frozen=True)
class Extractor:
    """How a final answer is read from a completion.

    ``kind="presrm"``: :func:`presrm.verify.extract_answer` in ``mode`` strict or
    flexible. ``kind="regex"``: lm-evaluation-harness's regex filter: all matches
    of ``pattern``, the one at index ``group_select``, its first non-empty group
    when the pattern has several, stripped. Either returns None when nothing is
    found (lm-eval writes ``[invalid]``, which never matches a gold answer).
    """

    kind: str = "presrm"
    mode: str = "strict"
    pattern: str = ""
    group_select: int = 0

    @classmethod
    def from_spec(cls, name: str, spec: Any, where: str) -> Extractor:
        """Parse ``presrm_strict`` / ``presrm_flexible`` or ``{regex: ..., group_select: N}``."""
        if spec in ("presrm_strict", "presrm_flexible"):
            return cls("presrm", spec.split("_", 1)[1])
        if isinstance(spec, dict) and set(spec) <= {"regex", "group_select"} and isinstance(spec.get("regex"), str):
            try:
                re.compile(spec["regex"])
            except re.error as e:
                raise ConfigError(f"{where}: key 'extractors.{name}.regex' is not a valid regex ({e})") from e
            group = spec.get("group_select", 0)
            if not isinstance(group, int) or isinstance(group, bool):
                raise ConfigError(f"{where}: key 'extractors.{name}.group_select' must be an integer")
            return cls("regex", pattern=spec["regex"], group_select=group)
        raise ConfigError(f"{where}: key 'extractors.{name}' must be presrm_strict, presrm_flexible or "
                          f"{{regex: PATTERN, group_select: N}}, got {spec!r}")

    @property
    def name(self) -> str:
        if self.kind == "presrm":
            return f"presrm_{self.mode}"
        return f"regex({self.pattern!r}, group_select={self.group_select})"

    def extract(self, text: str) -> str | None:
        if self.kind == "presrm":
            from presrm.verify import extract_answer

            return extract_answer(text, self.mode)
        found = re.findall(self.pattern, text)
        if not found:
            return None
        try:
            match = found[self.group_select]
        except IndexError:
            return None
        if isinstance(match, tuple):
            match = next((m for m in match if m), None)
            if match is None:
                return None
        return match.strip()


@dataclass(frozen=True)
class Match:
    """When an extracted answer counts as correct.

    ``kind="presrm"``: :func:`presrm.verify.answers_match` against the gold final
    answer (numbers compared exactly, units and LaTeX tolerated).
    ``kind="exact_match"``: lm-evaluation-harness's ``exact_match`` metric: each
    regex in ``regexes_to_ignore`` is deleted from both sides in turn, then case
    and punctuation are optionally dropped, then the strings must be equal. The
    reference is the dataset's whole answer field when ``target="raw"``
    (lm-eval's ``doc_to_target: "{{answer}}"``), else the gold final answer.

    Note:
        Asymmetric like ``answers_match``: prediction first, reference second.
    """

    kind: str = "presrm"
    ignore_case: bool = False
    ignore_punctuation: bool = False
    regexes_to_ignore: tuple[str, ...] = ()
    target: str = "answer"

    def reference(self, problem: Problem) -> str:
        """The text a prediction is compared with."""
        if self.target == "raw" and problem.solution is not None:
            return problem.solution
        return problem.answer

    def normalize(self, text: str) -> str:
        """The exact_match normalization (also the voting key of maj@k under this protocol)."""
        for rx in self.regexes_to_ignore:
            text = re.sub(rx, "", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text

    def correct(self, pred: str | None, reference: str) -> bool:
        if pred is None:
            return False
        if self.kind == "presrm":
            from presrm.verify import answers_match

            return answers_match(pred, reference)
        return self.normalize(pred) == self.normalize(reference)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "regexes_to_ignore": list(self.regexes_to_ignore)}


@dataclass(frozen=True)
class Fewshot:
    """Where shots come from and how a shot is written.

    ``target``: ``steps`` writes the gold solution as ``Step n:`` lines ending in
    "The answer is N." (presrm's format), ``raw`` copies the answer field as it is.
    With a chat template, each shot is a user turn and an assistant turn; without
    one, shots are ``prompt + target_delimiter + target`` joined by ``delimiter``
    before the question (lm-eval's layout). Shots are the same for every problem:
    ``num_fewshot`` records drawn from the pool with ``random.Random(seed)``.
    """

    paths: tuple[str, ...] = ()
    hf_dataset: str | None = None
    hf_config: str | None = None
    split: str = "train"
    seed: int = 1234
    target: str = "steps"
    target_delimiter: str = " "
    delimiter: str = "\n\n"

DEFAULT_EXTRACTORS = {"strict": Extractor("presrm", "strict"), "flexible": Extractor("presrm", "flexible")}


@dataclass(frozen=True)
class Task:
    """A task and its evaluation protocol (see the module docstring)."""

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
    chat_template: bool = True
    max_new_tokens: int | None = None
    num_fewshot: int = 0
    fewshot: Fewshot | None = None
    extractors: dict[str, Extractor] = field(default_factory=lambda: dict(DEFAULT_EXTRACTORS))
    match: Match = field(default_factory=Match)

    def protocol(self) -> dict[str, Any]:
        """What an evaluation records so that its figure can be reproduced."""
        import hashlib

        return {"task": self.name, "version": self.version, "source_file": self.source_file,
                "prompt": self.prompt, "prompt_sha256": hashlib.sha256(self.prompt.encode()).hexdigest(),
                "chat_template": self.chat_template, "shots": self.num_fewshot,
                "fewshot": dataclasses.asdict(self.fewshot) if self.fewshot and self.num_fewshot else None,
                "response_prefix": self.response_prefix, "stop": list(self.stop),
                "extractors": {k: e.name for k, e in self.extractors.items()}, "match": self.match.to_dict()}

    def template(self) -> Template:
        """The ``prompt``, compiled once in the sandbox of :mod:`presrm.templating` (errors name the file and key)."""
        return compile_template(self.prompt, f"{self.source_file}: key 'prompt'")

    def with_shots(self, k: int) -> Task:
        """This task with ``num_fewshot = k`` (the CLI's ``--num-fewshot``)."""
        if k < 0:
            raise ConfigError(f"num_fewshot must be >= 0, got {k}")
        if k and self.fewshot is None:
            raise ConfigError(f"task {self.name} ({self.source_file}) has no 'fewshot' section, so it cannot "
                              "take shots; add fewshot.data.paths (e.g. GSM8K train.jsonl)")
        return dataclasses.replace(self, num_fewshot=k)


def tasks_dir(override: str | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("PRESRM_TASKS_DIR")
    return Path(env) if env else REPO_TASKS


_TASK_KEYS = {"name", "version", "description", "data", "fields", "answer_format", "prompt", "response_prefix",
              "stop", "chat_template", "max_new_tokens", "num_fewshot", "fewshot", "extractors", "match"}
_MATCH_KEYS = {"kind", "ignore_case", "ignore_punctuation", "regexes_to_ignore", "target"}
_FEWSHOT_KEYS = {"data", "seed", "target", "target_delimiter", "delimiter"}


def _match(raw: Any, where: str) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, dict) or not set(raw) <= _MATCH_KEYS:
        raise ConfigError(f"{where}: key 'match' must be a mapping with keys from {sorted(_MATCH_KEYS)}")
    m = Match(kind=str(raw.get("kind", "presrm")), ignore_case=bool(raw.get("ignore_case", False)),
              ignore_punctuation=bool(raw.get("ignore_punctuation", False)),
              regexes_to_ignore=tuple(str(x) for x in raw.get("regexes_to_ignore") or ()),
              target=str(raw.get("target", "answer")))
    if m.kind not in {"presrm", "exact_match"}:
        raise ConfigError(f"{where}: key 'match.kind' must be presrm or exact_match, got {m.kind!r}")
    if m.target not in {"answer", "raw"}:
        raise ConfigError(f"{where}: key 'match.target' must be answer or raw, got {m.target!r}")
    for rx in m.regexes_to_ignore:
        try:
            re.compile(rx)
        except re.error as e:
            raise ConfigError(f"{where}: key 'match.regexes_to_ignore' has an invalid regex {rx!r} ({e})") from e
    return m


def _fewshot(raw: Any, where: str) -> Fewshot | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= _FEWSHOT_KEYS:
        raise ConfigError(f"{where}: key 'fewshot' must be a mapping with keys from {sorted(_FEWSHOT_KEYS)}")
    data = raw.get("data") or {}
    fs = Fewshot(paths=tuple(data.get("paths") or ()), hf_dataset=data.get("hf_dataset"),
                 hf_config=data.get("hf_config"), split=str(data.get("split", "train")),
                 seed=int(raw.get("seed", 1234)), target=str(raw.get("target", "steps")),
                 target_delimiter=str(raw.get("target_delimiter", " ")),
                 delimiter=str(raw.get("delimiter", "\n\n")))
    if fs.target not in {"steps", "raw"}:
        raise ConfigError(f"{where}: key 'fewshot.target' must be steps or raw, got {fs.target!r}")
    if not fs.paths and not fs.hf_dataset:
        raise ConfigError(f"{where}: key 'fewshot.data' needs paths or hf_dataset")
    return fs


def _extractors(raw: Any, where: str) -> dict[str, Extractor]:
    if raw is None:
        return dict(DEFAULT_EXTRACTORS)
    if not isinstance(raw, dict) or set(raw) != {"strict", "flexible"}:
        raise ConfigError(f"{where}: key 'extractors' must map exactly 'strict' and 'flexible' to extractors")
    return {name: Extractor.from_spec(name, spec, where) for name, spec in raw.items()}


def load_task(name_or_path: str, tasks_dir_override: str | None = None) -> Task:
    """Load a task by name (``tasks/<name>.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if not (p.suffix in {".yaml", ".yml"} and p.is_file()):
        p = tasks_dir(tasks_dir_override) / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in tasks_dir(tasks_dir_override).glob("*.yaml"))
        raise ConfigError(f"task {name_or_path!r} not found (looked for {p}; known tasks: {known})")
    raw = read_yaml(p, error=ConfigError) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of task settings at the top level")
    for key in raw:
        if key not in _TASK_KEYS:
            raise ConfigError(f"{p}: key '{key}' is not a task setting (known: {sorted(_TASK_KEYS)})")
    for key in ("name", "version", "prompt"):
        if key not in raw:
            raise ConfigError(f"{p}: missing required key '{key}'")
    data = raw.get("data") or {}
    fmt = raw.get("answer_format", "gsm8k")
    if fmt not in {"gsm8k", "plain"}:
        raise ConfigError(f"{p}: key 'answer_format' must be 'gsm8k' or 'plain', got {fmt!r}")
    max_new = raw.get("max_new_tokens")
    if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
        raise ConfigError(f"{p}: key 'max_new_tokens' must be a positive integer, got {max_new!r}")
    task = Task(
        name=str(raw["name"]), version=int(raw["version"]), prompt=str(raw["prompt"]), source_file=str(p),
        description=str(raw.get("description", "")), paths=tuple(data.get("paths") or ()),
        hf_dataset=data.get("hf_dataset"), hf_config=data.get("hf_config"), split=str(data.get("split", "test")),
        fields={"id": None, "question": "question", "answer": "answer", **(raw.get("fields") or {})},
        answer_format=fmt, response_prefix=str(raw.get("response_prefix", "")),
        stop=tuple(raw.get("stop") or ()), chat_template=bool(raw.get("chat_template", True)),
        max_new_tokens=max_new, fewshot=_fewshot(raw.get("fewshot"), str(p)),
        extractors=_extractors(raw.get("extractors"), str(p)), match=_match(raw.get("match"), str(p)),
    )
    task.template().render(question="<QUESTION>")  # a bad prompt fails here, before any model loads
    shots = raw.get("num_fewshot", 0)
    if not isinstance(shots, int) or isinstance(shots, bool):
        raise ConfigError(f"{p}: key 'num_fewshot' must be an integer, got {shots!r}")
    return task.with_shots(shots)


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


def load_shots(task: Task) -> list[Problem]:
    """The task's ``num_fewshot`` shots: drawn once with ``random.Random(fewshot.seed)`` from the pool.

    The same shots precede every problem, so a figure is reproducible from the
    protocol alone (it records the seed and the shots' ids).
    """
    if not task.num_fewshot:
        return []
    fs = task.fewshot
    if fs is None:  # pragma: no cover - Task.with_shots refuses this
        raise ConfigError(f"task {task.name} has shots but no 'fewshot' section")
    pool_task = dataclasses.replace(task, name=f"{task.name}-fewshot", paths=fs.paths, hf_dataset=fs.hf_dataset,
                                    hf_config=fs.hf_config, split=fs.split, num_fewshot=0)
    pool = load_problems(pool_task)
    if len(pool) < task.num_fewshot:
        raise DataError(f"task {task.name}: {task.num_fewshot} shots asked but the fewshot pool has {len(pool)}")
    picks = random.Random(fs.seed).sample(range(len(pool)), task.num_fewshot)
    return [pool[i] for i in picks]


def shot_target(task: Task, shot: Problem) -> str:
    """A shot's answer as the model should write it (see :class:`Fewshot`)."""
    from presrm.steps import format_steps, gold_to_steps

    fs = task.fewshot
    if fs is not None and fs.target == "raw":
        return shot.solution if shot.solution is not None else shot.answer
    body = gold_to_steps(shot.solution) if shot.solution else [f"The answer is {shot.answer}."]
    return format_steps(body)
