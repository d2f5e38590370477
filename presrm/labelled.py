"""Labelled sets that measure a step judge: synthetic, natural, and any ProcessBench-format file.

Three sources, one record type each:

* :func:`build_labelled_set` -- **synthetic**: GSM8K gold solutions in ``Step n:``
  form (every step correct) and a copy with one result perturbed by
  :mod:`presrm.perturb` (the first error is that step). Built the same way as the
  EFT data, so it flatters a judge trained on EFT.
* :func:`build_natural_set` -- **natural**: the model's own sampled steps. At each
  step of a problem the policy samples K candidate next steps after the prefix it
  wrote itself (what the judge sees during step search); the verifier labels each
  candidate ``correct``, ``incorrect`` or ``unverifiable``; the path goes on with a
  seeded random candidate. Built once per generating model and saved as JSONL
  (:func:`write_natural_set`), so the same steps measure M0, M1, M2 ...
* :func:`read_processbench` -- **any file** in ProcessBench's public format: JSON or
  JSONL records with ``id``, ``problem``, ``steps`` (strings), ``label`` (index of the
  first wrong step, -1 if none) and ``final_answer_correct``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from presrm.errors import DataError
from presrm.jsonio import iter_jsonl, read_json, write_json, write_jsonl
from presrm.perturb import DELTAS, MAX_TRIES, perturb
from presrm.progress import bar as progress_bar
from presrm.schema import Problem
from presrm.steps import format_steps, gold_to_steps, is_final_answer
from presrm.verify import check_step

NATURAL_SCHEMA = 1
VERDICTS = ("correct", "incorrect", "unverifiable")


@dataclass(frozen=True)
class LabelledSolution:
    """One solution with a known first error (-1: every step is correct).

    ``original_step`` is the correct twin of the perturbed step (synthetic sets only);
    ``perturbation`` says which number changed (``{"from": "24", "to": "27", "delta": 3}``).
    """

    id: str
    problem_id: str
    question: str
    steps: tuple[str, ...]
    first_error: int
    original_step: str | None = None
    perturbation: dict[str, Any] | None = None

    @property
    def flawed(self) -> bool:
        return self.first_error >= 0


@dataclass
class LabelledSet:
    """The solutions, and how the verifier filtered their construction."""

    solutions: list[LabelledSolution]
    stats: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- synthetic


def build_labelled_set(problems: Sequence[Problem], *, seed: int = 0) -> LabelledSet:
    """Gold and perturbed solutions for problems with a gold solution, confirmed by the verifier.

    Deterministic: each problem's choices come from ``random.Random(f"{seed}:{problem.id}")``,
    so a problem's items do not depend on which other problems are in the set.

    >>> p = Problem("p1", "Tom has 3 apples and buys 4. How many?", "7", "3 + 4 = <<3+4=7>>7\\n#### 7")
    >>> [(s.first_error, s.steps[0]) for s in build_labelled_set([p]).solutions]
    [(-1, 'Step 1: 3 + 4 = 7'), (0, 'Step 1: 3 + 4 = 9')]
    """
    stats = dict.fromkeys(("problems", "no_solution", "gold_kept", "gold_rejected", "perturbed_kept",
                           "candidates_tried", "candidates_rejected", "no_candidate"), 0)
    out: list[LabelledSolution] = []
    for problem in problems:
        stats["problems"] += 1
        if not problem.solution:
            stats["no_solution"] += 1
            continue
        steps = tuple(format_steps(gold_to_steps(problem.solution)).split("\n"))
        verdicts = [check_step(s).verdict for s in steps]
        if "incorrect" in verdicts:
            stats["gold_rejected"] += 1
        else:
            stats["gold_kept"] += 1
            out.append(LabelledSolution(f"{problem.id}/gold", problem.id, problem.question, steps, -1))
        flawed = _perturbed(problem, steps, verdicts, random.Random(f"{seed}:{problem.id}"), stats)
        if flawed is not None:
            out.append(flawed)
    return LabelledSet(out, stats)


def _perturbed(problem: Problem, steps: tuple[str, ...], verdicts: list[str], rng: random.Random,
               stats: dict[str, int]) -> LabelledSolution | None:
    """The first verifier-confirmed perturbation among the problem's candidates (in seeded order)."""
    candidates = [(k, text, info) for k, step in enumerate(steps) if verdicts[k] == "correct"
                  and "incorrect" not in verdicts[:k] for text, info in perturb(step, rng)]
    rng.shuffle(candidates)
    if not candidates:
        stats["no_candidate"] += 1
        return None
    for k, text, info in candidates[:MAX_TRIES]:
        stats["candidates_tried"] += 1
        if check_step(text).verdict != "incorrect":
            stats["candidates_rejected"] += 1
            continue
        stats["perturbed_kept"] += 1
        new_steps = (*steps[:k], text, *steps[k + 1:])
        return LabelledSolution(f"{problem.id}/perturbed", problem.id, problem.question, new_steps, k,
                                original_step=steps[k], perturbation={"step": k, **info})
    return None


def synthetic_protocol() -> dict[str, Any]:
    return {"perturbation_deltas": list(DELTAS), "max_tries": MAX_TRIES}


# --------------------------------------------------------------------------- natural


@dataclass(frozen=True)
class NaturalStep:
    """One candidate step the model wrote after its own prefix, labelled by the verifier.

    ``group`` names the prefix: candidates of one group were sampled after the very same steps,
    so a ``correct`` and an ``incorrect`` one of a group are the pair the judge faces in search.
    """

    id: str
    problem_id: str
    question: str
    previous: tuple[str, ...]
    step: str
    label: str
    group: str
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "previous": list(self.previous)}


@dataclass
class NaturalSet:
    """The steps and how they were made (generating model, sampling, counts)."""

    steps: list[NaturalStep]
    meta: dict[str, Any] = field(default_factory=dict)


Sampler = Callable[[Sequence[str], int], list[list[str]]]
"""``sampler(prompts, seed)`` -> K raw continuations per prompt (the search's sampler)."""


def build_natural_set(problems: Sequence[Problem], prompt: Callable[[str, Sequence[str], int], str],
                      sampler: Sampler, *, max_steps: int = 8, seed: int = 0,
                      desc: str | None = "natural set") -> NaturalSet:
    """Sample candidate steps along the model's own paths and label each with the verifier.

    ``prompt(question, previous_steps, n)`` is the policy prompt ending in ``Step n:``;
    ``sampler`` returns raw continuations (cut at the next step by
    :func:`presrm.search.step_candidates`). All problems advance together, one sampler
    call per round. A path continues with a random candidate (seeded per problem and round,
    so a problem's path does not depend on the other problems), and ends at a final-answer
    step, when no candidate is left, or after ``max_steps`` rounds.
    """
    from presrm.search import step_candidates

    paths: dict[str, list[str]] = {p.id: [] for p in problems}
    active = [p for p in problems]
    out: list[NaturalStep] = []
    bar = progress_bar(total=max_steps, desc=desc, unit="round", disable=desc is None)
    for rnd in range(max_steps):
        if not active:
            break
        ns = [len(paths[p.id]) + 1 for p in active]
        raw = sampler([prompt(p.question, paths[p.id], n) for p, n in zip(active, ns, strict=True)],
                      seed * 1_000_003 + rnd * 1009)
        still = []
        for p, n, r in zip(active, ns, raw, strict=True):
            cands = step_candidates(r, n)
            group = f"{p.id}/s{n}"
            for j, c in enumerate(cands):
                out.append(NaturalStep(f"{group}/c{j}", p.id, p.question, tuple(paths[p.id]), c,
                                       check_step(c).verdict, group, is_final_answer(c)))
            if not cands:
                continue
            nxt = random.Random(f"{seed}:{p.id}:{n}").choice(cands)
            paths[p.id].append(nxt)
            if not is_final_answer(nxt):
                still.append(p)
        active = still
        bar.update(1)
    bar.close()
    counts = {v: sum(s.label == v for s in out) for v in VERDICTS}
    groups = _mixed_groups(out)
    meta = {"schema_version": NATURAL_SCHEMA, "problems": len(problems), "steps": len(out), **counts,
            "groups_with_right_and_wrong": len(groups), "max_steps": max_steps, "seed": seed}
    return NaturalSet(out, meta)


def _mixed_groups(steps: Sequence[NaturalStep]) -> dict[str, list[NaturalStep]]:
    """The groups (same prefix) that hold at least one correct and one incorrect candidate."""
    by: dict[str, list[NaturalStep]] = {}
    for s in steps:
        by.setdefault(s.group, []).append(s)
    return {g: v for g, v in by.items()
            if any(s.label == "correct" for s in v) and any(s.label == "incorrect" for s in v)}


def right_wrong_couples(steps: Sequence[NaturalStep], *, per_group: int = 4,
                        seed: int = 0) -> list[tuple[NaturalStep, NaturalStep]]:
    """(correct, incorrect) candidates at the same prefix, at most ``per_group`` per prefix (seeded)."""
    out = []
    for g, members in _mixed_groups(steps).items():
        couples = [(a, b) for a in members if a.label == "correct" for b in members if b.label == "incorrect"]
        random.Random(f"{seed}:{g}").shuffle(couples)
        out += couples[:per_group]
    return out


def natural_meta_path(path: str | Path) -> Path:
    """The build record that sits next to a natural set: ``x.jsonl`` -> ``x.meta.json``."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".meta.json")


def write_natural_set(path: str | Path, nat: NaturalSet) -> None:
    """Write the steps (JSONL, one step per line) and then the build record beside them."""
    write_jsonl(path, nat.steps)
    write_json(natural_meta_path(path), nat.meta)


_NATURAL_KEYS = ("id", "problem_id", "question", "previous", "step", "label", "group")


def read_natural_set(path: str | Path) -> NaturalSet:
    """Read a natural set written by :func:`write_natural_set`; errors name the file and line."""
    steps = []
    for n, rec in iter_jsonl(path, required=_NATURAL_KEYS):
        if rec["label"] not in VERDICTS or not isinstance(rec["previous"], list):
            raise DataError(f"{path}:{n}: 'label' must be one of {', '.join(VERDICTS)} and 'previous' a list")
        steps.append(NaturalStep(str(rec["id"]), str(rec["problem_id"]), str(rec["question"]),
                                 tuple(str(s) for s in rec["previous"]), str(rec["step"]), rec["label"],
                                 str(rec["group"]), bool(rec.get("final", False))))
    meta_file = natural_meta_path(path)
    meta = read_json(meta_file) if meta_file.exists() else {}
    if not steps:
        raise DataError(f"{path}: no steps in this natural set")
    return NaturalSet(steps, meta)


# --------------------------------------------------------------------------- ProcessBench format

PROCESSBENCH_KEYS = ("id", "problem", "steps", "label")


def read_processbench(path: str | Path) -> LabelledSet:
    """Read a ProcessBench-format file (a JSON list, or JSONL) into a :class:`LabelledSet`.

    Each record: ``id``, ``problem``, ``steps`` (a list of strings), ``label`` (the first wrong
    step, 0-based; -1 when every step is right) and ``final_answer_correct`` (optional here).
    Errors name the file and the record (line for JSONL, index for JSON).
    """
    p = Path(path)
    if p.suffix == ".json":
        data = read_json(p)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list of records, got {type(data).__name__}")
        records = [(f"{p}[{i}]", r) for i, r in enumerate(data)]
    else:
        records = [(f"{p}:{n}", r) for n, r in iter_jsonl(p)]
    out = []
    for where, rec in records:
        out.append(_processbench_record(where, rec))
    if not out:
        raise DataError(f"{p}: no records")
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{p}: id {dup!r} appears more than once")
    return LabelledSet(out, {"problems": len({s.problem_id for s in out}), "records": len(out)})


def _processbench_record(where: str, rec: Any) -> LabelledSolution:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in PROCESSBENCH_KEYS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing key {missing[0]!r} (keys present: {sorted(rec)})")
    steps, label = rec["steps"], rec["label"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: 'steps' must be a non-empty list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise DataError(f"{where}: 'label' must be -1 or a step index below {len(steps)}, got {json.dumps(label)}")
    if not isinstance(rec["problem"], str):
        raise DataError(f"{where}: 'problem' must be a string")
    return LabelledSolution(str(rec["id"]), str(rec["id"]), rec["problem"], tuple(steps), label)
