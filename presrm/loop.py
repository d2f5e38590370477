"""One self-rewarding run: M0 -> M1 -> ... over a run directory.

Layout (every file written atomically; a stage whose output exists is
skipped, so ``--resume`` after a crash continues where the run stopped)::

    runs/<name>/config.yaml                 resolved config, versions, seed, git hash
    runs/<name>/iter_0/eval_before.json     M0 on the eval problems (+ eval_before_samples.jsonl)
    runs/<name>/iter_k/samples.jsonl        step search: candidates, scores, verdicts, decisions
    runs/<name>/iter_k/search.json          outcomes, no-pair reasons, judge-verifier agreement
    runs/<name>/iter_k/pairs.jsonl          step-level preference pairs
    runs/<name>/iter_k/adapter/             LoRA adapter (peft format); train.json has the metrics
    runs/<name>/iter_k/model/               merged M_{k+1}, the next iteration's policy and judge
    runs/<name>/iter_k/eval.json            M_{k+1} on the same problems (+ eval_samples.jsonl)
    runs/<name>/report.html, report.json
"""

from __future__ import annotations

import gc
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from presrm.config import RunConfig, dump_config
from presrm.data import load_problems, load_task
from presrm.errors import RunStateError
from presrm.jsonio import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("presrm", "torch", "transformers", "peft", "trl", "datasets", "sympy", "math-verify"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_hash() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@dataclass
class RunDir:
    root: Path

    def iter_dir(self, k: int) -> Path:
        return self.root / f"iter_{k}"

    def policy(self, k: int, base: str) -> str:
        """The model spec of M_k: the base model for k == 0, else iteration k-1's merged model."""
        return base if k == 0 else str(self.iter_dir(k - 1) / "model")


def _prepare(cfg: RunConfig, resume: bool) -> RunDir:
    root = Path(cfg.output_dir) / cfg.name
    cfg_file = root / "config.yaml"
    text = dump_config(cfg)
    if cfg_file.exists():
        if not resume:
            raise RunStateError(f"run directory {root} already exists; pass --resume to continue it, "
                                "or choose another name=... / output_dir=...")
        old = yaml.safe_load(cfg_file.read_text()).get("config")
        if old != cfg.to_dict():
            raise RunStateError(f"{cfg_file} holds a different config than this run; resume with the same "
                                "recipe and overrides, or start a new run name")
    root.mkdir(parents=True, exist_ok=True)
    meta = {"config": yaml.safe_load(text), "versions": versions(), "git": git_hash(), "seed": cfg.seed}
    if not cfg_file.exists():
        cfg_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    return RunDir(root)


def _free(*objs: Any) -> None:
    del objs
    gc.collect()


def _eval_stage(cfg: RunConfig, spec: str, out: Path, name: str, problems, task) -> dict[str, Any]:
    from presrm.evaluate import evaluate, write_eval
    from presrm.judge import make_judge
    from presrm.models import load_model

    if (out / f"{name}.json").exists():
        log.info("skip %s: %s exists", name, out / f"{name}.json")
        return read_json(out / f"{name}.json")
    model, tok = load_model(spec, device=cfg.device)
    judge = make_judge(cfg.judge.mode, model, tok, template=cfg.judge.template,
                       batch_size=cfg.judge.batch_size) if cfg.eval.judge_steps else None
    summary, records = evaluate(model, tok, task, problems, max_new_tokens=cfg.eval.max_new_tokens,
                                batch_size=cfg.eval.batch_size, judge=judge, label=name)
    summary["model"] = spec
    samples = "eval_samples.jsonl" if name == "eval" else f"{name}_samples.jsonl"
    write_eval(out, summary, records, name=f"{name}.json", samples=samples)
    _free(model, judge)
    return summary


def _search_stage(cfg: RunConfig, spec: str, out: Path, k: int) -> list[dict[str, Any]]:
    from presrm.judge import make_judge
    from presrm.models import load_model
    from presrm.search import search_stats, step_search

    if (out / "pairs.jsonl").exists() and (out / "samples.jsonl").exists():
        log.info("skip step search: %s exists", out / "pairs.jsonl")
        return read_jsonl(out / "pairs.jsonl")
    task = load_task(cfg.search.task, cfg.tasks_dir)
    problems = load_problems(task, limit=cfg.search.num_problems,
                             offset=cfg.search.offset + k * cfg.search.num_problems,
                             data_file=cfg.search.data_file)
    model, tok = load_model(spec, device=cfg.device)
    judge = make_judge(cfg.judge.mode, model, tok, template=cfg.judge.template, batch_size=cfg.judge.batch_size)
    records, pairs = step_search(model, tok, judge, task, problems, cfg.search, seed=cfg.seed + k, iteration=k,
                                 aggregate_how=cfg.judge.aggregate)
    write_jsonl(out / "samples.jsonl", records)
    write_json(out / "search.json", search_stats(records, pairs))
    write_jsonl(out / "pairs.jsonl", pairs)  # last: its presence marks the stage complete
    _free(model, judge)
    return [p.to_dict() for p in pairs]


def _train_stage(cfg: RunConfig, spec: str, out: Path, pairs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    from presrm.models import load_model
    from presrm.train import train_step_dpo

    if (out / "model" / "config.json").exists() and (out / "train.json").exists():
        log.info("skip training: %s exists", out / "model")
        return read_json(out / "train.json")
    if not pairs:
        raise RunStateError(f"iteration {k} produced no preference pairs ({out / 'samples.jsonl'} says why "
                            "each step was dropped); raise search.num_problems or search.k")
    model, tok = load_model(spec, device=cfg.device, training=True, precision=cfg.train.precision)
    metrics, trained = train_step_dpo(model, tok, pairs, cfg.train, out / "adapter", seed=cfg.seed + k,
                                      device=cfg.device)
    merged = trained.merge_and_unload()
    merged.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    write_json(out / "train.json", metrics)  # last: marks the stage complete
    _free(model, trained, merged)
    return metrics


def run(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run every iteration of ``cfg``; return a summary (also in ``report.json``)."""
    from presrm.report import write_report

    rd = _prepare(cfg, resume)
    eval_task = load_task(cfg.eval.task, cfg.tasks_dir)
    eval_problems = load_problems(eval_task, limit=cfg.eval.limit, data_file=cfg.eval.data_file)
    summary: dict[str, Any] = {"run_dir": str(rd.root), "iterations": []}
    if cfg.eval.before:
        before = _eval_stage(cfg, cfg.model, rd.iter_dir(0), "eval_before", eval_problems, eval_task)
        summary["before"] = before
    for k in range(cfg.iterations):
        out = rd.iter_dir(k)
        spec = rd.policy(k, cfg.model)
        log.info("iteration %d: policy and judge = %s", k, spec)
        pairs = _search_stage(cfg, spec, out, k)
        metrics = _train_stage(cfg, spec, out, pairs, k)
        it: dict[str, Any] = {"iteration": k, "pairs": len(pairs), "search": read_json(out / "search.json"),
                              "train": {key: v for key, v in metrics.items() if key != "log_history"}}
        if cfg.eval.after:
            it["eval"] = _eval_stage(cfg, str(out / "model"), out, "eval", eval_problems, eval_task)
        summary["iterations"].append(it)
    summary["report"] = str(write_report(rd.root))
    return summary
