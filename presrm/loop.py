"""One self-rewarding run: M0 -> M1 -> ... over a run directory.

The run directory's layout is :mod:`presrm.layout` (described there once). Every
file and model folder is written atomically and a stage whose last output exists
is skipped, so ``--resume`` after a crash, even ``kill -9``, continues where the
run stopped and rebuilds exactly what was lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import gc
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from presrm import dist
from presrm.config import RunConfig, dump_config
from presrm.data import load_problems, load_task
from presrm.engines import registry as engine_registry
from presrm.engines.holder import RUN_ENGINE, inference_precision, open_run_engine
from presrm.errors import ConfigError, DataError, RunStateError
from presrm.jsonio import read_json, read_jsonl, read_yaml, writable_dir, write_json, write_jsonl, write_text_atomic
from presrm.layout import RunLayout, StageDir
from presrm.progress import bar as progress_bar

log = logging.getLogger(__name__)


def git_hash() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _saved_config(cfg_file: Path) -> Any:
    """The config a run directory was started with (``config.yaml``'s ``config``)."""
    saved = read_yaml(cfg_file, error=RunStateError) or {}
    return saved.get("config") if isinstance(saved, dict) else None


def _prepare(cfg: RunConfig, resume: bool) -> RunLayout:
    run = RunLayout(Path(cfg.output_dir) / cfg.name)
    root, cfg_file = run.root, run.config
    text = dump_config(cfg)
    if cfg_file.exists():
        if not resume:
            raise RunStateError(f"run directory {root} already exists; pass --resume to continue it, "
                                "or choose another name=... / output_dir=...")
        if _saved_config(cfg_file) != cfg.to_dict():
            raise RunStateError(f"{cfg_file} holds a different config than this run; resume with the same "
                                "recipe and overrides, or start a new run name")
    dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        from presrm.models import versions

        meta = {"config": yaml.safe_load(text), "versions": versions(), "git": git_hash(), "seed": cfg.seed}
        if not cfg_file.exists():
            write_text_atomic(cfg_file, yaml.safe_dump(meta, sort_keys=False))
    dist.barrier()
    return run


def _free(*objs: Any) -> None:
    del objs
    gc.collect()


def _rank0_first(fn):
    """For a stage that is not sharded and skips itself when its output exists (on-policy steps, judge eval):
    rank 0 runs it while the other ranks wait, then they run it too, find the output and read it.

    With collective engines (vLLM under ``accelerate launch``: every rank opens and closes each engine
    together with the others) the waiting ranks follow rank 0's engine changes meanwhile
    (:meth:`presrm.engines.holder.EngineHolder.follow`)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if dist.is_main():
            result = fn(*args, **kwargs)
            RUN_ENGINE.stop_followers()
        else:
            RUN_ENGINE.follow()
        dist.barrier()
        if not dist.is_main():
            result = fn(*args, **kwargs)
        return result
    return wrapper


def _save_trained(trained, tok, out: StageDir, metrics: dict[str, Any], *, lora: bool) -> None:
    """Rank 0 merges the adapter into the fp32 weights, saves ``out/model`` and then ``out/train.json`` (which
    marks the stage complete); the other ranks wait. The model is saved in fp32, the master copy, so the
    next iteration trains from exact weights; inference loads cast it to bf16 where that is native."""
    if dist.is_main():
        final = trained.merge_and_unload() if lora else trained
        from presrm.models import save_model_atomic

        save_model_atomic(final, tok, out.model)
        write_json(out.train, metrics)  # last: marks the stage complete
    dist.barrier()


def make_run_judge(cfg: RunConfig, engine, *, mode: str | None = None, task: str | None = None):
    """The self-judge the recipe asks for (``mode`` overrides ``judge.mode``), running on ``engine``.

    ``task`` is the task whose steps it judges (the likelihood judge rebuilds the policy's prompt from it);
    the tasks folder and the run's seed (the random judge) come from the recipe.
    """
    from presrm.judge import make_judge_from_config

    return make_judge_from_config(cfg.judge, engine, mode=mode, task=task, tasks_dir=cfg.tasks_dir, seed=cfg.seed)


def step_judge_mode(cfg: RunConfig) -> str:
    """The judge that gives evaluations their per-step scores: the run's own when it scores single steps
    (pointwise, likelihood, random), else (pairwise, generative: they compare two steps) the pointwise judge
    (:func:`presrm.judges.registry.step_judge_for`, which ``presrm eval`` asks too)."""
    from presrm.judges.registry import step_judge_for

    return step_judge_for(cfg.judge.mode)


def check_runnable(cfg: RunConfig) -> None:
    """Refuse, in one line and before any stage starts, a recipe that cannot run here: an engine that cannot run
    here (``engines.registry.check_runnable``: ``engine: vllm`` without vLLM, or with a tensor parallel size that
    does not divide the processes), a missing ``init.model`` folder, task or data file, a judge template (any
    ``judge.*template`` key) that cannot be read or rendered. ``config.validate`` checks what needs no import and
    no file system."""
    from presrm.judge import check_templates

    engine_registry.check_runnable(cfg, processes=dist.world_size())
    check_templates(cfg.judge, [cfg.judge.mode, step_judge_mode(cfg)])  # every template key, read or not
    if cfg.init.model is not None and not (Path(cfg.init.model) / "config.json").is_file():
        missing = "does not exist" if not Path(cfg.init.model).exists() else "is not a model folder (no config.json)"
        raise ConfigError(f"key 'init.model': {cfg.init.model} {missing}; pass the model/ folder of an "
                          "initialised run, e.g. runs/NAME/init/model")
    uses = [("eval", cfg.eval.before or cfg.eval.after or cfg.eval.judge_eval),
            ("search", cfg.iterations >= 1), ("init", cfg.init.ift or cfg.init.eft)]
    for section, used in uses:
        if not used:
            continue
        part = getattr(cfg, section)
        try:
            load_task(part.task, cfg.tasks_dir)
        except ConfigError as e:
            raise ConfigError(f"key '{section}.task': {e}") from None
        data = None if part.data_file is None else Path(part.data_file)
        if data is not None and not data.is_file():
            what = "is a folder" if data.is_dir() else "does not exist"
            raise ConfigError(f"key '{section}.data_file': {data} {what}; pass a JSONL file")


def judge_prompt_renderer(cfg: RunConfig, model, tok) -> tuple[Callable[..., str], str]:
    """The configured judge's own prompt renderer (so EFT trains on the exact judge prompt) and its prefill.

    ``render(*fields)`` takes the fields of the judge's item (question, previous, step; or question,
    previous, a, b) and returns ``judge.prompt(item)``.
    """
    from presrm.engines import HFEngine

    judge = make_run_judge(cfg, HFEngine(model, tok))
    return (lambda *fields: judge.prompt(judge.item_type(*fields))), judge.prefill


class Progress:
    """One bar over the run's stages (iteration and stage in its label, time left from the stages done).

    Each stage logs ``stage start: <label>`` and ``stage done: <label>``; a stage
    skipped on resume leaves the bar's total, so the estimate counts only real work.
    Each stage that ran adds a line to ``stages`` (``stages.jsonl``: label, seconds, when it ended).
    """

    def __init__(self, labels: list[str], name: str, stages: Path | None = None):
        self.name, self.stages, self.started = name, stages, time.monotonic()
        self.bar = progress_bar(total=len(labels), desc=f"{name}", unit="stage", position=0)

    def start(self, label: str) -> None:
        self.bar.set_description(f"{self.name} [{label}]")
        self.started = time.monotonic()
        log.info("stage start: %s", label)

    def done(self, label: str, *, skipped: bool) -> None:
        if skipped:
            self.bar.total -= 1
            self.bar.refresh()
        else:
            self.bar.update(1)
            if self.stages is not None and dist.is_main():
                done = read_jsonl(self.stages) if self.stages.is_file() else []
                ended = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                write_jsonl(self.stages, [*done, {"stage": label, "seconds": round(time.monotonic() - self.started, 1),
                                                  "ended": ended}])
        log.info("stage %s: %s", "skipped" if skipped else "done", label)

    def close(self) -> None:
        self.bar.close()


def _stage_labels(cfg: RunConfig) -> list[str]:
    judged = cfg.eval.judge_eval
    labels = (["M0 eval"] + (["M0 judge eval"] if judged else [])) if cfg.eval.before else []
    if cfg.init.ift or cfg.init.eft or cfg.init.model:
        labels += [] if cfg.init.model else ["init SFT"]
        if cfg.eval.after and cfg.init.evaluate:
            labels += ["init eval"] + (["init judge eval"] if judged else [])
    for k in range(cfg.iterations):
        # grpo samples and rewards its own rollouts while it trains: no search stage before it
        labels += ([f"iter {k}/{cfg.iterations} search"] if cfg.train.algorithm == "step_dpo" else [])
        labels += [f"iter {k}/{cfg.iterations} train"]
        labels += [f"iter {k}/{cfg.iterations} guard"] if cfg.loop.guard != "off" else []
        if cfg.eval.after:
            labels += [f"iter {k}/{cfg.iterations} eval"] + ([f"iter {k}/{cfg.iterations} judge eval"] if judged
                                                             else [])
    return labels


def _eval_stage(cfg: RunConfig, spec: str, out: StageDir, name: str, problems,
                task) -> tuple[dict[str, Any], bool]:
    from presrm.decoding import Decoding
    from presrm.evaluate import evaluate, summarize, write_eval

    summary_file, _ = out.eval_files(name)
    if out.evaluated(name):
        return read_json(summary_file), True
    decoding = Decoding.from_config(cfg)
    steps_mode = step_judge_mode(cfg) if cfg.eval.judge_steps or decoding.scores_steps else None
    with open_run_engine(cfg, spec, samples=cfg.eval.decoding.lower() != "greedy") as engine:
        judge = make_run_judge(cfg, engine, mode=steps_mode, task=cfg.eval.task) if steps_mode else None
        # Under accelerate launch each rank decodes its own block of the problems and rank 0 writes them all.
        summary, records = evaluate(engine, task, dist.shard(problems), max_new_tokens=cfg.eval.max_new_tokens,
                                    batch_size=cfg.eval.batch_size, judge=judge, label=name, decoding=decoding)
    records = dist.gather(records)
    summary.update(summarize(records))
    summary["protocol"]["processes"] = dist.world_size()
    if steps_mode:  # which judge wrote the per-step scores (the run's judge, or pointwise for a pair judge)
        summary["protocol"]["judge_steps_mode"] = steps_mode
    summary["model"] = spec
    if dist.is_main():
        write_eval(out.path, summary, records, name=summary_file.name)
    dist.barrier()
    return summary, False


@_rank0_first
def _on_policy_steps(cfg: RunConfig, task, problems, out: StageDir):
    """M0's own candidate steps on the init problems, labelled by the verifier (``init/on_policy.jsonl``)."""
    from presrm.generate import STEP_STOP, step_prompter
    from presrm.labelled import build_natural_set, read_natural_set, write_natural_set
    from presrm.search import step_sampler

    path = out.on_policy
    if path.exists():
        return read_natural_set(path)
    search = dataclasses.replace(cfg.search, k=cfg.init.on_policy_k)
    with open_run_engine(cfg, cfg.model, samples=True) as engine:
        sampler = step_sampler(engine, search, [STEP_STOP, *task.stop])
        nat = build_natural_set(problems[:cfg.init.on_policy_problems], step_prompter(engine.tok, task),
                                sampler, max_steps=cfg.init.on_policy_max_steps, seed=cfg.seed,
                                desc="init: on-policy steps")
        nat.meta.update(generator=cfg.model, task=task.name, k=cfg.init.on_policy_k,
                        temperature=cfg.search.temperature, top_p=cfg.search.top_p,
                        hardware=engine.describe()["hardware"], engine=cfg.engine)
    write_natural_set(path, nat)
    return nat


def _evaluates(cfg: RunConfig) -> bool:
    """Whether the run evaluates any model (accuracy, and the judge sets built from the same problems)."""
    return cfg.eval.before or cfg.eval.after


def _eval_questions(cfg: RunConfig) -> frozenset[str]:
    """The questions the run evaluates on (accuracy or judge sets); empty when it evaluates nothing."""
    if not _evaluates(cfg):
        return frozenset()
    eval_task = load_task(cfg.eval.task, cfg.tasks_dir)
    limits = [cfg.eval.largest_limit()] + ([cfg.eval.judge_eval_limit] if cfg.eval.judge_eval else [])
    limit = None if None in limits else max(limits)
    return frozenset(p.question.strip() for p in load_problems(eval_task, limit=limit, data_file=cfg.eval.data_file))


def _apart_from_eval(cfg: RunConfig, problems: list, stage: str) -> tuple[list, int]:
    """``problems`` (init's or a search's) minus any whose question is one the run evaluates on.

    GSM8K's train and test splits share no question, so with the stock tasks nothing is dropped; a
    user's own data files get the same guarantee: train and test never mix. ``stage`` names the
    caller in the warning.
    """
    held_out = _eval_questions(cfg)
    kept = [p for p in problems if p.question.strip() not in held_out]
    if len(kept) < len(problems):
        log.warning("%s: %d problem(s) left out because the run also evaluates on them", stage,
                    len(problems) - len(kept))
    return kept, len(problems) - len(kept)


@_rank0_first
def _judge_eval_stage(cfg: RunConfig, run: RunLayout, spec: str, out: StageDir,
                      name: str) -> tuple[dict[str, Any], bool]:
    """The model ``spec`` as a judge (the run's ``judge:`` section, every setting) on the synthetic set and on the
    run's natural set."""
    from presrm.judge_eval import JudgeEvalArgs, run_judge_eval

    folder = out.judge_eval(name)
    if folder.results.exists():
        return read_json(folder.results), True
    args = JudgeEvalArgs(model=spec, judge=cfg.judge, limit=cfg.eval.judge_eval_limit, output_dir=str(folder.root),
                         seed=cfg.seed, task=cfg.eval.task, tasks_dir=cfg.tasks_dir, data_file=cfg.eval.data_file,
                         device=cfg.device, precision=inference_precision(cfg), natural=str(run.natural),
                         natural_model=cfg.model, natural_k=cfg.eval.judge_eval_k,
                         natural_max_steps=cfg.eval.judge_eval_max_steps, natural_temperature=cfg.search.temperature,
                         engine=cfg.engine, vllm=cfg.vllm)
    if not run.natural.exists():  # built once per run, by M0, on the shared engine
        from presrm.judge_eval import natural_set_for

        with open_run_engine(cfg, cfg.model, samples=True) as engine:
            natural_set_for(args, load_task(cfg.eval.task, cfg.tasks_dir), engine)
    with open_run_engine(cfg, spec) as engine:
        return run_judge_eval(args, engine=engine), False


def _init_stage(cfg: RunConfig, out: StageDir) -> tuple[dict[str, Any], bool]:
    """IFT/EFT: supervised fine-tuning of M0 on step-format gold solutions and judge examples."""
    from presrm.init_data import eft_examples, ift_examples, on_policy_examples
    from presrm.models import load_model
    from presrm.train import train_sft

    if out.trained():
        return read_json(out.train), True
    task = load_task(cfg.init.task, cfg.tasks_dir)
    problems = load_problems(task, limit=cfg.init.problems(), offset=cfg.init.offset, data_file=cfg.init.data_file)
    problems, overlap = _apart_from_eval(cfg, problems, "init")
    nat = _on_policy_steps(cfg, task, problems, out) if cfg.init.eft and "on_policy" in cfg.init.eft_sources else None
    RUN_ENGINE.release()  # no inference engine holds memory while a model trains
    model, tok = load_model(cfg.model, device=cfg.device, training=True, precision=cfg.train.precision)
    examples: list[dict[str, Any]] = []
    if cfg.init.ift:
        from presrm.data import load_shots
        from presrm.generate import response_prompt
        from presrm.grading import build_prompt

        shots = load_shots(task)  # as evaluation draws them: IFT trains in the context the policy is asked in
        ift = ift_examples(problems[:cfg.init.ift_problems], lambda q: build_prompt(tok, task, q, shots),
                           lambda q, steps: response_prompt(tok, task, q, steps, shots=shots))
        if dist.is_main():
            write_jsonl(out.ift, ift)
        examples += ift
    if cfg.init.eft:
        render, prefill = judge_prompt_renderer(cfg, model, tok)
        eft = []
        if "gold" in cfg.init.eft_sources:
            eft += eft_examples(problems[:cfg.init.eft_problems], render, mode=cfg.judge.mode, seed=cfg.seed,
                                prefill=prefill, per_problem=cfg.init.eft_per_problem)
        if nat is not None:
            eft += on_policy_examples(nat.steps, render, mode=cfg.judge.mode, seed=cfg.seed, prefill=prefill)
        if dist.is_main():
            write_jsonl(out.eft, eft)
        examples += eft
    if not examples:
        raise RunStateError(f"init produced no SFT examples from {len(problems)} problems of task {task.name} "
                            "(no gold solutions?); check init.task / init.data_file")
    train_cfg = dataclasses.replace(cfg.train, lora=cfg.train.lora if cfg.init.lora is None else cfg.init.lora)
    metrics, trained = train_sft(model, tok, examples, cfg.init, train_cfg, out.adapter, seed=cfg.seed,
                                 device=cfg.device)
    metrics.update(ift_examples=sum(e["kind"] == "ift" for e in examples),
                   eft_examples=sum(e["kind"] == "eft" for e in examples),
                   eft_on_policy_examples=sum(e.get("source") == "on_policy" for e in examples),
                   init_problems_dropped_as_eval_problems=overlap,
                   on_policy_steps={k: nat.meta[k] for k in ("steps", "correct", "incorrect", "unverifiable")}
                   if nat is not None else None)
    _save_trained(trained, tok, out, metrics, lora=train_cfg.lora)
    _free(model, trained)
    return metrics, False


def _given_m1(cfg: RunConfig, out: StageDir) -> dict[str, Any]:
    """``init.model``: no SFT; record which folder M1 is (``init/given.json``) and return the record."""
    record = {"model": str(Path(cfg.init.model).resolve()), "given_as": cfg.init.model, "key": "init.model"}
    if dist.is_main() and not out.given.exists():
        write_json(out.given, record)
    dist.barrier()
    return record


def _search_problems(cfg: RunConfig, k: int, what: str):
    """``(task, problems, overlap)``: iteration ``k``'s train problems (``search.*``), those that are eval
    problems left out (``overlap`` of them)."""
    task = load_task(cfg.search.task, cfg.tasks_dir)
    offset, count = cfg.search.problems_at(k)
    problems = load_problems(task, limit=count, offset=offset, data_file=cfg.search.data_file)
    problems, overlap = _apart_from_eval(cfg, problems, f"iteration {k} {what}")
    return task, problems, overlap


def _search_stage(cfg: RunConfig, spec: str, out: StageDir, k: int) -> tuple[list[dict[str, Any]], bool]:
    from presrm.search import search_stats, solution_search, step_search

    if out.searched():
        return read_jsonl(out.pairs), True
    task, problems, overlap = _search_problems(cfg, k, "search")
    with open_run_engine(cfg, spec, search=True, samples=True) as engine:  # released before training
        judge = make_run_judge(cfg, engine, task=cfg.search.task)
        # Under accelerate launch each rank searches its own block of the problems (so the samples differ from a
        # single process's: a batch's seed covers other prompts) and rank 0 writes them all, in problem order.
        search = solution_search if cfg.search.granularity == "solution" else step_search
        records, pairs = search(engine, judge, task, dist.shard(problems), cfg.search, seed=cfg.seed + k,
                                iteration=k, aggregate_how=cfg.judge.aggregate)
    records, pairs = dist.gather(records), dist.gather(pairs)
    cap = cfg.search.max_pairs_at(k)
    capped = max(len(pairs) - cap, 0) if cap is not None else 0
    pairs = pairs[:cap] if cap is not None else pairs
    if dist.is_main():
        write_jsonl(out.samples, records)
        write_json(out.search, {**search_stats(records, pairs), "granularity": cfg.search.granularity,
                                "pairs_over_max_pairs": capped, "problems_dropped_as_eval_problems": overlap})
        write_jsonl(out.pairs, pairs)  # last: its presence marks the stage complete
    dist.barrier()
    # Read back, so that a fresh run and a resumed one train on byte-identical input.
    return read_jsonl(out.pairs), False


def _grpo_stage(cfg: RunConfig, spec: str, out: StageDir, k: int) -> tuple[dict[str, Any], bool]:
    """``train.algorithm: grpo``: online RL on the iteration's search problems, rewarded by the judge of the model
    the iteration starts from (on the HF engine, beside the policy, for the whole stage). Writes the rollouts as
    search records (``samples.jsonl``, ``search.json``), then the model and ``train.json``."""
    from presrm.engines import EngineOptions, open_engine
    from presrm.generate import step_prompter
    from presrm.models import load_model
    from presrm.search import search_stats
    from presrm.self_reward import SelfReward
    from presrm.train import train_grpo

    if out.trained():
        return read_json(out.train), True
    task, problems, overlap = _search_problems(cfg, k, "grpo")
    RUN_ENGINE.release()
    options = EngineOptions(name="hf", device=cfg.device, precision=inference_precision(cfg, search=True),
                            batch_size=cfg.search.batch_size, seed=cfg.seed + k)
    with open_engine(spec, options) as engine:
        judge = make_run_judge(cfg, engine, task=cfg.search.task)
        reward = SelfReward(judge, cfg.search, aggregate_how=cfg.judge.aggregate, iteration=k)
        prompt_for = step_prompter(engine.tok, task)
        rows = [{"prompt": prompt_for(p.question, (), 1), "id": p.id, "question": p.question, "answer": p.answer}
                for p in problems]
        model, tok = load_model(spec, device=cfg.device, training=True, precision=cfg.train.precision)
        metrics, trained = train_grpo(model, tok, rows, reward, cfg.train, out.adapter, generations=cfg.search.k,
                                      temperature=cfg.search.temperature, top_p=cfg.search.top_p,
                                      max_completion_tokens=cfg.search.max_steps * cfg.search.max_step_tokens,
                                      seed=cfg.seed + k, device=cfg.device)
    records = dist.gather(reward.records())
    if dist.is_main():
        write_jsonl(out.samples, records)
        write_json(out.search, {**search_stats(records, []), "granularity": "rollout", "algorithm": "grpo",
                                "problems_dropped_as_eval_problems": overlap})
    _save_trained(trained, tok, out, metrics, lora=cfg.train.lora)
    _free(model, trained)
    return metrics, False


def _train_stage(cfg: RunConfig, spec: str, out: StageDir, pairs: list[dict[str, Any]],
                 k: int) -> tuple[dict[str, Any], bool]:
    from presrm.models import load_model
    from presrm.train import train_step_dpo

    if out.trained():
        return read_json(out.train), True
    if not pairs:
        raise RunStateError(f"iteration {k} produced no preference pairs ({out.samples} says why "
                            "each step was dropped); raise search.num_problems or search.k")
    RUN_ENGINE.release()  # no inference engine holds memory while a model trains
    model, tok = load_model(spec, device=cfg.device, training=True, precision=cfg.train.precision)
    metrics, trained = train_step_dpo(model, tok, pairs, cfg.train, out.adapter, seed=cfg.seed + k,
                                      device=cfg.device)
    _save_trained(trained, tok, out, metrics, lora=cfg.train.lora)
    _free(model, trained)
    return metrics, False


def _dev_problems(cfg: RunConfig) -> tuple[Any, list]:
    """The guard's dev slice: ``loop.guard_problems`` problems of the training split (the search task unless
    ``loop.guard_task`` says otherwise), right after the last problem any iteration searches by default."""
    task = load_task(cfg.loop.guard_task or cfg.search.task, cfg.tasks_dir)
    offset = cfg.loop.guard_offset if cfg.loop.guard_offset is not None else sum(
        cfg.search.problems_at(cfg.iterations - 1))
    problems = load_problems(task, limit=cfg.loop.guard_problems, offset=offset,
                             data_file=cfg.loop.guard_data_file or cfg.search.data_file)
    problems, _ = _apart_from_eval(cfg, problems, "guard")
    if not problems:
        raise DataError(f"loop.guard: no dev problems at offset {offset} of {task.name}; set loop.guard_offset, "
                        "loop.guard_data_file, or loop.guard: off")
    return task, problems


def _guard_stage(cfg: RunConfig, before: tuple[str, StageDir, str], after: tuple[str, StageDir],
                 k: int) -> tuple[dict[str, Any], bool]:
    """The collapse guard after iteration ``k`` (:mod:`presrm.guard`): the new model and its predecessor evaluated
    greedily on the dev slice (each once: the predecessor's evaluation is the previous iteration's), compared,
    and the verdict written to ``iter_k/guard.json``."""
    from presrm.guard import decide, describe

    out = after[1]
    if out.guard.exists():
        return read_json(out.guard), True
    greedy = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, decoding="greedy", judge_steps=False))
    task, problems = _dev_problems(cfg)
    records = []
    for spec, stage, name in (before, (*after, "dev_eval")):
        summary, _ = _eval_stage(greedy, spec, stage, name, problems, task)
        records.append({str(r["id"]): r for r in read_jsonl(stage.eval_files(name)[1])})
    verdict = decide(*records, alpha=cfg.loop.guard_alpha)
    promoted = verdict["promote"] or cfg.loop.guard != "stop"
    result = {"iteration": k, "mode": cfg.loop.guard, "before": before[0], "after": after[0], "promoted": promoted,
              "line": describe(verdict), **verdict}
    if dist.is_main():
        write_json(out.guard, result)
    dist.barrier()
    return result, False


def _staged(progress: Progress, label: str, fn, *args) -> Any:
    """Run one stage. Under ``accelerate launch``, an error or SIGTERM that comes from another rank ending (killed,
    crashed) becomes one :class:`presrm.errors.RankLostError` naming that rank and this stage
    (:func:`presrm.dist.rank_lost`); this rank's own errors pass as they are."""
    progress.start(label)
    try:
        result, skipped = fn(*args)
    except BaseException as e:
        from presrm.signals import turned_into

        lost = turned_into(dist.rank_lost, e, label)  # the launcher's SIGTERM has done its work
        if lost is not None:
            raise lost from e
        raise
    progress.done(label, skipped=skipped)
    return result


def run(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run every stage of ``cfg``; return a summary (also in ``report.json``).

    The run directory is locked while the run writes (:class:`presrm.runlock.RunLock`, rank 0 under accelerate
    launch): a second run on it is refused at once, naming the holder."""
    from presrm.hub import check_push
    from presrm.runlock import RunLock

    check_runnable(cfg)  # before the run directory is made
    check_push(cfg)
    writable_dir(cfg.output_dir, "output_dir")  # a file in the way or a read-only disk fails now, not after hours
    with RunLock(Path(cfg.output_dir) / cfg.name) if dist.is_main() else contextlib.nullcontext():
        return _run(cfg, resume=resume)


def _run(cfg: RunConfig, *, resume: bool) -> dict[str, Any]:
    from presrm.hub import push
    from presrm.report import write_report
    from presrm.tracking import RunTracker

    dist.init()
    RUN_ENGINE.start(cfg)
    rd = _prepare(cfg, resume)
    trains_m1 = cfg.init.ift or cfg.init.eft
    m1 = cfg.init.model or (str(rd.init.model) if trains_m1 else None)  # None: iteration 0 starts from M0
    tracker = RunTracker.for_run(cfg.train.report_to, rd.root, cfg.name)
    eval_task = load_task(cfg.eval.task, cfg.tasks_dir)
    # read only when a model is evaluated: a run without evaluation needs no test split (offline, no local file)
    eval_problems = load_problems(eval_task, limit=cfg.eval.largest_limit(), data_file=cfg.eval.data_file) \
        if _evaluates(cfg) else []

    def problems_of(model: int) -> list:
        """The eval problems model M_``model`` is evaluated on (eval.limit, per model when a list)."""
        return eval_problems[:cfg.eval.limit_of(model)]

    if not eval_problems and (cfg.eval.before or cfg.eval.after):
        raise DataError(f"eval.task {eval_task.name}: no problems to evaluate in "
                        f"{cfg.eval.data_file or 'its data'}; fix eval.data_file or set eval.before/after: false")
    summary: dict[str, Any] = {"run_dir": str(rd.root), "iterations": []}
    progress = Progress(_stage_labels(cfg), cfg.name, rd.stages)
    try:
        if cfg.eval.before:
            summary["before"] = _staged(progress, "M0 eval", _eval_stage, cfg, cfg.model, rd.iteration(0),
                                        "eval_before", problems_of(0), eval_task)
            tracker.update(summary)
            if cfg.eval.judge_eval:
                summary["judge_before"] = _staged(progress, "M0 judge eval", _judge_eval_stage, cfg, rd,
                                                  cfg.model, rd.iteration(0), "judge_eval_before")
        if m1 is not None:
            init = rd.init
            if trains_m1:
                metrics = _staged(progress, "init SFT", _init_stage, cfg, init)
                summary["init"] = {"model": m1, "train": {key: v for key, v in metrics.items() if key != "log_history"}}
            else:
                summary["init"] = {"model": m1, "given": _given_m1(cfg, init)}
                log.info("M1 = %s (init.model): no IFT/EFT", m1)
            if cfg.eval.after and cfg.init.evaluate:
                summary["init"]["eval"] = _staged(progress, "init eval", _eval_stage, cfg, m1, init, "eval",
                                                  problems_of(1), eval_task)
                tracker.update(summary)
                if cfg.eval.judge_eval:
                    summary["init"]["judge"] = _staged(progress, "init judge eval", _judge_eval_stage, cfg, rd,
                                                       m1, init, "judge_eval")
        for k in range(cfg.iterations):
            out, spec, tag = rd.iteration(k), rd.policy(k, cfg.model, init=m1), f"iter {k}/{cfg.iterations}"
            log.info("iteration %d: policy and judge = %s", k, spec)
            if cfg.train.algorithm == "grpo":
                pairs = []
                metrics = _staged(progress, f"{tag} train", _grpo_stage, cfg, spec, out, k)
            else:
                pairs = _staged(progress, f"{tag} search", _search_stage, cfg, spec, out, k)
                metrics = _staged(progress, f"{tag} train", _train_stage, cfg, spec, out, pairs, k)
            it: dict[str, Any] = {"iteration": k, "pairs": len(pairs), "search": read_json(out.search),
                                  "train": {key: v for key, v in metrics.items() if key != "log_history"}}
            if cfg.loop.guard != "off":
                prev = (rd.init, "dev_eval") if k == 0 and m1 is not None else (
                    (rd.iteration(0), "dev_eval_before") if k == 0 else (rd.iteration(k - 1), "dev_eval"))
                guard = _staged(progress, f"{tag} guard", _guard_stage, cfg, (spec, *prev), (str(out.model), out), k)
                it["guard"] = {key: guard[key] for key in ("promoted", "line", "worse", "mode", "n")}
                if not guard["promoted"]:
                    log.warning("iteration %d: M%d not promoted (loop.guard: stop), %s; the run ends with %s as its "
                                "final model", k, k + 1 + (m1 is not None), guard["line"], spec)
                    summary["iterations"].append(it)
                    summary["final_model"], summary["stopped"] = spec, guard["line"]
                    break
                if guard["worse"]:
                    log.warning("iteration %d: the guard (loop.guard: warn) says the new model is %s", k,
                                guard["line"])
            if cfg.eval.after:
                it["eval"] = _staged(progress, f"{tag} eval", _eval_stage, cfg, str(out.model), out, "eval",
                                     problems_of(k + 1 + (m1 is not None)), eval_task)
                if cfg.eval.judge_eval:
                    it["judge"] = _staged(progress, f"{tag} judge eval", _judge_eval_stage, cfg, rd,
                                          str(out.model), out, "judge_eval")
            summary["iterations"].append(it)
            tracker.update(summary)
    finally:
        RUN_ENGINE.release()
        progress.close()
        tracker.finish()
    summary.setdefault("final_model", str(rd.final_model(cfg.iterations, init=m1 or cfg.model)))
    summary["report"] = str(rd.report_html)
    if dist.is_main():
        write_report(rd.root)
        if cfg.train.push_to_hub:
            summary["hub"] = push(cfg, rd.root, summary)
    dist.barrier()
    return summary
