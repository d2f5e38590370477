"""Export a run's data in the formats other trainers read: TRL preference, TRL stepwise supervision, Step-DPO.

``presrm export RUN_DIR --format FORMAT --output DIR`` writes a ``datasets.DatasetDict`` (``save_to_disk``)
and one JSONL file per split, and with ``--push-to-hub REPO`` pushes it to the hub.

- ``trl-preference``: every iteration's step pairs in TRL's standard preference format (``prompt``, the
  policy's own text up to the step, chat template applied; ``chosen`` and ``rejected``, one step each).
- ``step-dpo``: the same pairs in Step-DPO's schema (``dataset``, ``prompt`` = the question,
  ``initial_reason_steps``, ``chosen``, ``rejected``, ``full_chosen``, ``full_rejected``, ``answer``).
- ``trl-stepwise``: the model's own steps labelled by the verifier, in TRL's stepwise-supervision format
  (``prompt`` = the question, ``completions`` = the steps, ``labels`` = one boolean per step): every
  candidate the step searches judged (after the steps chosen before it), the natural-error set and the
  on-policy EFT steps. A step the verifier cannot decide (no checkable arithmetic) is left out with the
  steps after it (``unverifiable="drop"``, the default: every label is a verifier's) or kept with label
  None (``"keep"``, a third class TRL's trainers do not read).

Pairs are labelled by the judge (it chose and rejected; the verifier only filtered), stepwise rows by the
verifier; judge scores travel as columns (``chosen_score``, ``scores``), never as labels. Every row names
its run, iteration (None outside the iterations), problem, the split its problem came from, its source and
its labeller. Splits: ``train`` (the iterations and init, from the search task's split) and ``test`` (the
natural-error set, built from evaluation problems), whichever exist.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from presrm.errors import ConfigError, DataError
from presrm.jsonio import iter_jsonl, read_yaml, write_jsonl
from presrm.layout import RunLayout

log = logging.getLogger(__name__)
FORMATS = ("trl-preference", "trl-stepwise", "step-dpo")
UNVERIFIABLE = ("drop", "keep")
_PAIR_KEYS = ("prompt", "chosen", "rejected", "meta")


def _run(run_dir: str | Path) -> tuple[RunLayout, dict[str, Any]]:
    run = RunLayout(Path(run_dir))
    if not run.config.is_file():
        raise DataError(f"{run_dir}: not a presrm run directory (no config.yaml; `presrm train` writes one)")
    saved = read_yaml(run.config)
    cfg = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(cfg, dict):
        raise DataError(f"{run.config}: no 'config' mapping (not written by presrm train?)")
    return run, cfg


def _split(cfg: dict[str, Any], section: str, default: str) -> str:
    """The dataset split a section's task reads (``search``: train problems; ``eval``: test problems)."""
    from presrm.data import load_task

    name = (cfg.get(section) or {}).get("task")
    if not name:
        return default
    try:
        return load_task(name, cfg.get("tasks_dir")).split
    except Exception:  # noqa: BLE001 - a task file gone since the run: its role still says which split
        return default


def _questions(run: RunLayout, k: int) -> dict[str, dict[str, Any]]:
    """Problem id -> its search record (question, gold answer) of iteration ``k``."""
    path = run.iteration(k).samples
    return {str(r["id"]): r for _, r in iter_jsonl(path, required=("id", "question"))} if path.is_file() else {}


def _pairs(run: RunLayout) -> Iterator[tuple[int, int, dict[str, Any]]]:
    for k in run.iterations():
        path = run.iteration(k).pairs
        if path.is_file():
            for n, rec in iter_jsonl(path, required=_PAIR_KEYS):
                yield k, n, rec


def _provenance(run: RunLayout, iteration: int | None, problem_id: str, split: str, source: str,
                labeller: str) -> dict[str, Any]:
    return {"run": run.root.name, "iteration": iteration, "problem_id": problem_id, "split": split,
            "source": source, "labeller": labeller}


def preference_rows(run: RunLayout, cfg: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """Every iteration's step pairs as TRL preference rows or Step-DPO rows."""
    split = _split(cfg, "search", "train")
    rows, questions = [], {}
    for k, n, rec in _pairs(run):
        meta = rec["meta"] if isinstance(rec["meta"], dict) else {}
        pid = str(meta.get("problem_id", ""))
        prov = _provenance(run, k, pid, split, "step search", "judge")
        extra = {key: meta.get(key) for key in ("step", "chosen_score", "rejected_score", "chosen_verdict",
                                                "rejected_verdict", "flag")}
        if fmt == "trl-preference":
            rows.append({"prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"],
                         **extra, **prov})
            continue
        if k not in questions:
            questions[k] = _questions(run, k)
        problem = questions[k].get(pid)
        if problem is None:
            raise DataError(f"{run.iteration(k).pairs}:{n}: problem {pid!r} is not in "
                            f"{run.iteration(k).samples.name} (the question Step-DPO's prompt needs)")
        initial = "".join(s + "\n" for s in meta.get("previous_steps") or [])
        rows.append({"dataset": f"presrm/{run.root.name}", "prompt": problem["question"],
                     "initial_reason_steps": initial, "chosen": rec["chosen"], "rejected": rec["rejected"],
                     "full_chosen": initial + rec["chosen"], "full_rejected": initial + rec["rejected"],
                     "answer": str(problem.get("gold", "")), **extra, **prov})
    return rows


def _label(verdict: str) -> bool | None:
    return {"correct": True, "incorrect": False}.get(verdict)


def _stepwise(question: str, steps: list[str], verdicts: list[str], scores: list[float | None], keep: bool,
              prov: dict[str, Any]) -> dict[str, Any] | None:
    """One TRL stepwise row; with ``keep`` False, cut before the first undecided step (None if none left)."""
    labels = [_label(v) for v in verdicts]
    if not keep and None in labels:
        cut = labels.index(None)
        steps, labels, scores = steps[:cut], labels[:cut], scores[:cut]
    if not steps:
        return None
    return {"prompt": question, "completions": steps, "labels": labels, "scores": scores, **prov}


def stepwise_rows(run: RunLayout, cfg: dict[str, Any], *, unverifiable: str = "drop") -> list[dict[str, Any]]:
    """The model's own verifier-labelled steps: search candidates, the natural set, the on-policy steps."""
    from presrm.verify import check_step

    keep = unverifiable == "keep"
    rows: list[dict[str, Any]] = []
    train_split = _split(cfg, "search", "train")
    verdict_of: dict[str, str] = {}

    def verdict(step: str) -> str:
        if step not in verdict_of:
            verdict_of[step] = check_step(step).verdict
        return verdict_of[step]

    for k in run.iterations():
        path = run.iteration(k).samples
        if not path.is_file():
            continue
        for _, rec in iter_jsonl(path, required=("id", "question", "search")):
            path_steps: list[str] = []
            path_verdicts: list[str] = []
            for entry in rec["search"] or []:
                cands = entry.get("candidates") or []
                prov = _provenance(run, k, str(rec["id"]), train_split, "step search candidates", "verifier")
                for c in cands:
                    row = _stepwise(rec["question"], [*path_steps, c["text"]], [*path_verdicts, c["verdict"]],
                                    [None] * len(path_steps) + [c.get("score")], keep, prov)
                    if row is not None:
                        rows.append({**row, "round": entry.get("round")})
                if entry.get("action") == "append" and cands:
                    chosen = cands[entry.get("chosen", 0)]
                    path_steps.append(chosen["text"])
                    path_verdicts.append(chosen["verdict"])
                elif entry.get("action") == "rollback" and path_steps:
                    path_steps.pop()
                    path_verdicts.pop()
    sources = [(run.natural, _split(cfg, "eval", "test"), "natural-error set", None)]
    sources.append((run.init.on_policy, train_split, "on-policy EFT steps", None))
    for path, split, source, iteration in sources:
        if not path.is_file():
            continue
        for _, rec in iter_jsonl(path):
            step, label = rec.get("step"), rec.get("label")
            if not isinstance(step, str) or label not in ("correct", "incorrect", "unverifiable"):
                continue  # an EFT example, not a labelled step
            previous = [str(s) for s in rec.get("previous") or []]
            row = _stepwise(str(rec.get("question", "")), [*previous, step], [*map(verdict, previous), label],
                            [None] * (len(previous) + 1), keep,
                            _provenance(run, iteration, str(rec.get("problem_id", "")), split, source, "verifier"))
            if row is not None:
                rows.append({**row, "round": None})
    return rows


def check_stepwise(row: dict[str, Any]) -> None:
    """TRL's stepwise-supervision format, as its dataset docs define it: a string ``prompt``, a list of string
    ``completions`` and a list of boolean ``labels`` of the same length."""
    ok = (isinstance(row.get("prompt"), str) and isinstance(row.get("completions"), list)
          and isinstance(row.get("labels"), list) and len(row["completions"]) == len(row["labels"]) > 0
          and all(isinstance(c, str) for c in row["completions"])
          and all(isinstance(x, bool) for x in row["labels"]))
    if not ok:
        raise ValueError(f"not a TRL stepwise-supervision row: {str(row)[:200]}")


def export_run(run_dir: str | Path, fmt: str, output: str | Path, *, unverifiable: str = "drop",
               push_to_hub: str | None = None) -> dict[str, Any]:
    """Write ``fmt`` rows of the run at ``run_dir`` to ``output`` (``save_to_disk`` and ``<split>.jsonl``).

    Nothing is written when the run has nothing to export or a file is bad. Returns what was written.
    """
    import datasets

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}")
    if unverifiable not in UNVERIFIABLE:
        raise ConfigError(f"--unverifiable {unverifiable!r} is not one of: {', '.join(UNVERIFIABLE)}")
    run, cfg = _run(run_dir)
    if fmt == "trl-stepwise":
        rows = stepwise_rows(run, cfg, unverifiable=unverifiable)
        what = "verifier-labelled steps (step search, natural-error set, on-policy steps)"
    else:
        rows = preference_rows(run, cfg, fmt)
        what = "step pairs (iter_*/pairs.jsonl)"
    if not rows:
        raise DataError(f"{run_dir}: no {what} to export yet")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--output {out} exists and is not an empty folder; choose a new one")
    by_split: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_split.setdefault(r["split"], []).append(r)
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(rs) for s, rs in sorted(by_split.items())})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:  # written aside and renamed into place: an error leaves nothing behind
        dd.save_to_disk(str(tmp / "dataset"))
        for s, rs in by_split.items():
            write_jsonl(tmp / f"{s}.jsonl", rs)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {"format": fmt, "run": str(run.root), "rows": {s: len(rs) for s, rs in sorted(by_split.items())},
               "unverifiable": unverifiable if fmt == "trl-stepwise" else None, "output": str(out)}
    if push_to_hub:
        from presrm.hub import push_dataset

        summary["hub"] = push_dataset(dd, push_to_hub)
    log.info("exported %s: %s", fmt, ", ".join(f"{s} {n} rows" for s, n in summary["rows"].items()))
    return summary
