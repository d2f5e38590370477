"""The ``presrm`` command line: a thin shell over the library.

Heavy imports (torch, transformers, trl) happen inside each command, so
``presrm --help`` is instant. Errors a user can fix print one line and exit 2:
argument errors (numbers out of range included) from the parser, everything
else from a :class:`~presrm.errors.PresrmError` raised by the library.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from presrm.config import default_of, settings
from presrm.engines import registry as engines
from presrm.errors import PresrmError
from presrm.judges.registry import modes as judge_modes
from presrm.judges.registry import step_modes
from presrm.layout import EvalLayout
from presrm.signals import Terminated, restore_signals, stop_on_signals

log = logging.getLogger("presrm")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where to read more), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _setting(key: str):
    """An argparse type for an option that sets what recipe key ``key`` sets: the key's number type and its
    declared range (``presrm.config``), so the option and the key refuse the same values."""
    s = settings()[key]

    def number(text: str) -> int | float:
        try:
            value = s.number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if s.number is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value not in s.range:
            raise argparse.ArgumentTypeError(f"must be {s.range.phrase}, got {text}")
        return value
    return number


def _sample_counts(text: str) -> tuple[int, ...]:
    """``--samples-curve``: comma-separated judge.samples values, each in judge.samples's range.

    >>> _sample_counts("1,2,4,8")
    (1, 2, 4, 8)
    """
    one = _setting("judge.samples")
    return tuple(one(part.strip()) for part in text.split(",") if part.strip())


def _adapter_dir(path: str | None) -> None:
    from presrm.errors import ModelLoadError

    if path and not (Path(path) / "adapter_config.json").is_file():
        raise ModelLoadError(f"--adapter {path}: not a LoRA adapter folder (no adapter_config.json in it); "
                             "pass e.g. runs/NAME/iter_0/adapter")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _acc_line(summary: dict) -> str:
    s, f = summary["strict"], summary["flexible"]
    return (f"strict {_pct(s['accuracy'])} [{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}], "
            f"flexible {_pct(f['accuracy'])} ({s['correct']}/{summary['n']} strict)")


def cmd_train(args: argparse.Namespace) -> int:
    from presrm import dist
    from presrm.config import load_config
    from presrm.loop import run
    from presrm.summary import run_lines

    cfg = load_config(args.config, args.overrides)
    summary = run(cfg, resume=args.resume)
    if not dist.is_main():
        return 0  # under accelerate launch, rank 0 prints the summary
    print("\n" + "\n".join(run_lines(summary)))
    if "hub" in summary:
        print(f"Final model on the hub: https://huggingface.co/{summary['hub']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from presrm import dist
    from presrm.config import load_config
    from presrm.reproduce import CardLayout, finding_line, pick_engine, reproduce

    overrides = list(args.overrides)
    engine = pick_engine(overrides)
    cfg = load_config(args.config, overrides + ([f"engine={engine}"] if engine else []))
    data = reproduce(cfg, resume=args.resume, solution=args.solution_arm)
    if not dist.is_main():
        return 0
    for f in data["findings"]:
        print(finding_line(f))
    card = CardLayout(Path(cfg.output_dir) / cfg.name)
    print(f"Report card: {card.card_md} and {card.card_html}")
    return 0


def _run_judge(model: str):
    """The ``judge:`` section of the run whose model folder ``model`` is (``RUN/init/model``, ``RUN/iter_k/model``)
    and that run's ``config.yaml``; ``(None, None)`` for any other model."""
    from presrm.config import JudgeConfig, from_dict
    from presrm.errors import ConfigError
    from presrm.jsonio import read_yaml

    folder = Path(model)
    recipe = folder.parent.parent / "config.yaml"
    if not (folder.name == "model" and folder.is_dir() and recipe.is_file()):
        return None, None
    saved = read_yaml(recipe, error=ConfigError) or {}
    section = ((saved.get("config") or {}).get("judge") or {}) if isinstance(saved, dict) else {}
    return from_dict(JudgeConfig, section, prefix="judge.", source=str(recipe)), recipe


def _eval_step_judge(args: argparse.Namespace) -> tuple[str, str]:
    """The judge that scores ``presrm eval``'s steps and where that choice came from: ``--judge``; else, for a
    run's model folder (``RUN/init/model``, ``RUN/iter_k/model``), the per-step judge of that run's evaluations
    (:func:`presrm.judges.registry.step_judge_for`, as the loop decides it); else pointwise."""
    from presrm.judges.registry import step_judge_for

    if args.judge:
        return args.judge, "--judge"
    run_judge, recipe = _run_judge(args.model)
    if run_judge is None:
        return step_judge_for(None), "default"
    mode = step_judge_for(run_judge.mode)
    if mode == run_judge.mode:
        return mode, f"judge.mode of {recipe}"
    return mode, f"{mode}: judge.mode {run_judge.mode} of {recipe} gives no per-step score"


def cmd_eval(args: argparse.Namespace) -> int:
    from presrm.data import load_problems, load_task
    from presrm.decoding import Decoding
    from presrm.engines import EngineOptions, open_engine
    from presrm.errors import ConfigError, DataError
    from presrm.evaluate import evaluate, write_eval
    from presrm.jsonio import writable_dir
    from presrm.judge import judge_config, make_judge_from_config
    from presrm.judges.registry import step_modes, template_key
    from presrm.report import write_report

    step_mode, source = _eval_step_judge(args)
    if args.judge_template and template_key(step_mode) is None:
        with_one = ", ".join(m for m in step_modes() if template_key(m))
        raise ConfigError(f"--judge-template overrides the judge's prompt; the {step_mode} judge ({source}) has "
                          f"none: drop it or pass --judge with one of: {with_one}")
    # A run's model is judged with that run's judge settings (templates, batch size, prefix cache).
    run_judge, _ = _run_judge(args.model)
    judge_cfg = judge_config(step_mode, base=run_judge, template=args.judge_template)
    task = load_task(args.task, args.tasks_dir)
    if args.num_fewshot is not None:
        task = task.with_shots(args.num_fewshot)
    decoding = Decoding.parse(args.decoding, k=args.k, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed, aggregate=args.aggregate, beam_width=args.beam_width,
                              beam_expand=args.beam_expand, max_steps=args.max_steps,
                              max_step_tokens=args.max_step_tokens)
    problems = load_problems(task, limit=args.limit, data_file=args.data_file)
    if not problems:
        raise DataError(f"task {task.name}: no problems to evaluate in {args.data_file or 'its data'}")
    _adapter_dir(args.adapter)
    writable_dir(args.output_dir, "--output-dir")  # before minutes of decoding, not after them
    options = EngineOptions(name=args.engine, device=args.device, precision=args.precision, batch_size=args.batch_size,
                            adapter=args.adapter, seed=args.seed)
    with open_engine(args.model, options) as engine:
        use_judge = args.judge_steps or decoding.scores_steps
        judge = make_judge_from_config(judge_cfg, engine, task=task, tasks_dir=args.tasks_dir,
                                       seed=args.seed) if use_judge else None
        summary, records = evaluate(engine, task, problems, max_new_tokens=args.max_new_tokens,
                                    batch_size=args.batch_size, judge=judge, label="eval", decoding=decoding)
    if judge is not None:
        summary["protocol"]["judge_steps_mode"] = step_mode
        summary["protocol"]["judge_steps_source"] = source
    summary.update({"model": args.model, "adapter": args.adapter, "precision": args.precision})
    write_eval(args.output_dir, summary, records)
    report = write_report(args.output_dir)
    print(f"Accuracy on {summary['n']} {task.name} problems ({decoding.label}, {task.num_fewshot}-shot): "
          f"{_acc_line(summary)} in {summary['seconds']:.1f} s")
    print(f"Results: {EvalLayout(Path(args.output_dir)).results}  Report: {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from presrm.compare import compare_runs, format_comparison
    from presrm.jsonio import writable_dir

    if args.output:
        writable_dir(Path(args.output).parent, "--output's folder")
    result = compare_runs(args.results_a, args.results_b, common=args.common)
    print(format_comparison(result))
    if args.output:
        from presrm.jsonio import write_json

        write_json(args.output, result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from presrm.export import export_run

    summary = export_run(args.run_dir, args.format, args.output, unverifiable=args.unverifiable,
                         push_to_hub=args.push_to_hub)
    rows = ", ".join(f"{split}: {n} rows" for split, n in summary["rows"].items())
    print(f"{args.format} -> {summary['output']} ({rows}); datasets.load_from_disk('{summary['output']}/dataset')"
          + (f"; pushed to {summary['hub']}" if summary.get("hub") else ""))
    return 0


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from presrm.jsonio import writable_dir
    from presrm.judge import judge_config
    from presrm.judge_eval import JudgeEvalArgs, run_judge_eval, summary_lines

    _adapter_dir(args.adapter)
    writable_dir(args.output_dir, "--output-dir")
    judge = judge_config(args.judge, template=args.template, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, tie_margin=args.tie_margin, samples=args.samples,
                         temperature=args.temperature,
                         both_orders=False if args.one_order else None,
                         prefix_cache=False if args.no_prefix_cache else None)
    results = run_judge_eval(JudgeEvalArgs(
        model=args.model, judge=judge, limit=args.limit, output_dir=args.output_dir, adapter=args.adapter,
        threshold=args.threshold, seed=args.seed, task=args.task, tasks_dir=args.tasks_dir,
        data_file=args.data_file, device=args.device, precision=args.precision, labelled=args.labelled,
        natural=args.natural, natural_model=args.natural_model, natural_k=args.natural_k,
        natural_max_steps=args.natural_max_steps, natural_temperature=args.natural_temperature, engine=args.engine,
        samples_curve=args.samples_curve))
    print("\n".join(summary_lines(results)))
    print(f"Results: {EvalLayout(Path(args.output_dir)).results}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from presrm.report import write_report

    print(write_report(args.run_dir))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from presrm.config import dump_config, load_config, reference

    if args.reference:
        sys.stdout.write(reference())
    else:
        sys.stdout.write(dump_config(load_config(args.config, args.overrides)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from presrm.jsonio import writable_dir
    from presrm.verify import verify_file

    writable_dir(Path(args.output).parent, "--output's folder")
    counts = verify_file(args.file, args.output, completion_key=args.completion_key, gold_key=args.gold_key)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


class _Versions(argparse.Action):
    """``--version``: presrm's and its libraries' versions, one ``name version`` line each (what CI prints)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from presrm.models import versions

        sys.stdout.write("".join(f"{name} {version}\n" for name, version in versions().items()))
        parser.exit()


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="presrm",
        description="Process-based self-rewarding for math reasoning: the model writes step-by-step "
                    "solutions, judges its own steps, and trains on step-level preference pairs (DPO).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action=_Versions, help="print the versions of presrm and the libraries it runs on")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="run self-rewarding iterations from a YAML recipe",
                       description="Run a recipe: evaluate M0, then per iteration step search -> pairs -> "
                                   "step-DPO -> evaluate. Overrides are KEY=VALUE, e.g. search.k=4 iterations=2.")
    t.add_argument("--config", required=True, help="recipe YAML (see configs/)")
    t.add_argument("--resume", action="store_true", help="continue an existing run directory, skipping done stages")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. search.k=4")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="GSM8K-style accuracy of a model",
                       description="Decode a task's problems (greedy, maj@k, best-of-N or judge-guided beam "
                                   "search) and report strict and flexible accuracy with the protocol that "
                                   "produced them (results.json, samples.jsonl).")
    e.add_argument("--model", default=default_of("model"), help="hub id, local HF folder, .gguf file, or 'embedded'")
    e.add_argument("--adapter", help="a LoRA adapter folder to apply (e.g. runs/x/iter_0/adapter)")
    e.add_argument("--task", default=default_of("eval.task"),
                   help="task name in tasks/ (gsm8k, gsm8k_cot_zeroshot) or a YAML path")
    e.add_argument("--tasks-dir", help="folder of task YAMLs")
    e.add_argument("--data-file", help="override the task's data file (JSONL)")
    e.add_argument("--limit", type=_setting("eval.limit"), help="first N problems")
    e.add_argument("--num-fewshot", type=_setting("eval.num_fewshot"),
                   help="shots before each problem (default: the task's num_fewshot)")
    e.add_argument("--output-dir", required=True, help="where results.json and samples.jsonl go")
    e.add_argument("--batch-size", type=_setting("eval.batch_size"), default=default_of("eval.batch_size"))
    e.add_argument("--max-new-tokens", type=_setting("eval.max_new_tokens"),
                   help="cap on new tokens (default: the task's, else 320)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--engine", default=engines.DEFAULT, choices=engines.names(),
                   help=f"inference engine: {engines.describe()}")
    e.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="model dtype (auto: bf16 on a bf16 GPU or a CPU measured faster in bf16, else fp32); fp32 "
                        "reproduces exactly")
    e.add_argument("--decoding", default=default_of("eval.decoding"),
                   help="greedy, maj@k (self-consistency; or maj@8), best-of-n (rerank by the judge's process "
                        "reward; or best-of-8), beam (step-level beam search guided by the judge)")
    e.add_argument("--k", "--n", dest="k", type=_setting("eval.k"), default=default_of("eval.k"),
                   help="samples for maj@k / candidates for best-of-n")
    e.add_argument("--temperature", type=_setting("eval.temperature"), default=default_of("eval.temperature"),
                   help="sampling temperature (maj@k, best-of-n, beam)")
    e.add_argument("--top-p", type=_setting("eval.top_p"), default=default_of("eval.top_p"))
    e.add_argument("--seed", type=_setting("seed"), default=default_of("seed"))
    e.add_argument("--aggregate", default=default_of("judge.aggregate"),
                   help="step scores -> process reward: min, mean, prod, last, gmean")
    e.add_argument("--beam-width", type=_setting("eval.beam_width"), default=default_of("eval.beam_width"),
                   help="beams kept after each step")
    e.add_argument("--beam-expand", type=_setting("eval.beam_expand"), default=default_of("eval.beam_expand"),
                   help="candidate next steps sampled per beam")
    e.add_argument("--max-steps", type=_setting("eval.max_steps"), default=default_of("eval.max_steps"),
                   help="beam search: cap on steps")
    e.add_argument("--max-step-tokens", type=_setting("eval.max_step_tokens"),
                   default=default_of("eval.max_step_tokens"), help="beam search: cap on tokens per step")
    e.add_argument("--judge", choices=step_modes(),
                   help="the judge that scores each step (and ranks best-of-n and beam candidates): pointwise "
                        "(P(Yes)), likelihood (the model's own probability of each stated result) or "
                        "random (a control: a seeded hash, no model). Default: for a run's model folder "
                        "(RUN/iter_k/model, RUN/init/model) the run's judge.mode when it is one of these, else "
                        "pointwise")
    e.add_argument("--judge-template", help="Jinja file overriding the pointwise judge prompt")
    e.add_argument("--no-judge-steps", dest="judge_steps", action="store_false",
                   help="skip scoring each step with the model's own judge (greedy, maj@k)")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="paired comparison of two evaluations (McNemar, step error rate)",
                       description="Compare two evaluations of the same problems: accuracies, their difference, "
                                   "discordant counts and an exact McNemar test, for strict and flexible answers; "
                                   "and the step error rate (wrong / verifiable steps) of each, their difference "
                                   "B - A with a 95% paired bootstrap interval over problems and a bootstrap p-value.")
    c.add_argument("results_a", metavar="RESULTS_A", help="results.json (or its folder) of run A")
    c.add_argument("results_b", metavar="RESULTS_B", help="results.json (or its folder) of run B")
    c.add_argument("--output", help="also write the comparison as JSON here")
    c.add_argument("--common", action="store_true",
                   help="pair only the problems both evaluated (e.g. a 400-problem subset against the full test); "
                        "without it, evaluations of different problems are an error")
    c.set_defaults(func=cmd_compare)

    from presrm.export import FORMATS, UNVERIFIABLE

    x = sub.add_parser("export", help="a run's step pairs or verifier-labelled steps as a datasets folder",
                       description="Export a run's data for other trainers (docs/export.md): trl-preference (the "
                                   "step pairs, TRL's preference format), step-dpo (the same pairs in Step-DPO's "
                                   "schema), trl-stepwise (the model's own steps labelled by the verifier, TRL's "
                                   "stepwise-supervision format). Writes DIR/dataset (datasets.save_to_disk) and "
                                   "DIR/<split>.jsonl.")
    x.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    x.add_argument("--format", required=True, choices=FORMATS)
    x.add_argument("--output", required=True, metavar="DIR", help="a new (or empty) folder")
    x.add_argument("--unverifiable", choices=UNVERIFIABLE, default="drop",
                   help="trl-stepwise: drop a step the verifier cannot decide (and the steps after it), or keep "
                        "it with label null (default: drop)")
    x.add_argument("--push-to-hub", metavar="REPO", help="also push the dataset to this hub repository")
    x.set_defaults(func=cmd_export)

    j = sub.add_parser("judge-eval", help="judge quality against verifier-labelled GSM8K steps",
                       description="Build gold and one-step-perturbed GSM8K solutions (first error known, "
                                   "confirmed by the verifier), or read a ProcessBench-format file (--labelled), "
                                   "run a judge on them and write results.json (ProcessBench F1, step AUROC, "
                                   "pairwise accuracy, speed) and samples.jsonl. --natural adds the model's own "
                                   "steps labelled by the verifier (AUROC and pairwise accuracy with 95% CIs).")
    j.add_argument("--model", default=default_of("model"), help="hub id, local HF folder, .gguf file, or 'embedded'")
    j.add_argument("--judge", default="pointwise",
                   choices=judge_modes(), help="judge mode")
    j.add_argument("--limit", type=int, default=50, help="first N problems (each gives a gold and a flawed solution)")
    j.add_argument("--output-dir", required=True, help="where results.json and samples.jsonl go")
    j.add_argument("--adapter", help="a LoRA adapter folder to apply")
    j.add_argument("--threshold", type=float, default=0.5,
                   help="pointwise: the first step scored below this is the predicted first error")
    j.add_argument("--seed", type=_setting("seed"), default=default_of("seed"),
                   help="seed of the perturbations and of the A/B sides")
    j.add_argument("--task", default=default_of("eval.task"),
                   help="task name in tasks/ or a task YAML path (GSM8K format)")
    j.add_argument("--tasks-dir", help="folder of task YAMLs")
    j.add_argument("--data-file", help="override the task's data file (JSONL)")
    j.add_argument("--template", help="a Jinja template file overriding the judge prompt")
    j.add_argument("--batch-size", type=int, help="judge prompts per batch (default: judge.batch_size's)")
    j.add_argument("--max-new-tokens", type=int,
                   help="generative/outcome: cap on the judge's reply (default: judge.max_new_tokens's)")
    j.add_argument("--samples", type=_setting("judge.samples"),
                   help="generative/outcome: sampled judgments per comparison, and a vote (default: judge.samples's)")
    j.add_argument("--temperature", type=_setting("judge.temperature"),
                   help="generative/outcome: temperature of the sampled judgments (default: judge.temperature's)")
    j.add_argument("--samples-curve", type=_sample_counts, default=(),
                   help="judge scaling: measure the judge again at each of these judge.samples, e.g. 1,2,4,8 "
                        "(results.json 'scaling')")
    j.add_argument("--one-order", action="store_true", help="pair judges: judge each pair with A first only")
    j.add_argument("--tie-margin", type=_setting("judge.tie_margin"),
                   help="pairwise: a tie when |P(A better) - 0.5| < margin / 2 (default: judge.tie_margin's)")
    j.add_argument("--no-prefix-cache", action="store_true", help="logit judges: no shared-prefix KV reuse")
    j.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    j.add_argument("--engine", default=engines.DEFAULT, choices=engines.names(),
                   help=f"inference engine: {engines.describe()}")
    j.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="model dtype (auto: bf16 on a bf16 GPU or a CPU measured faster in bf16, else fp32)")
    j.add_argument("--labelled", help="a ProcessBench-format file (JSON or JSONL: id, problem, steps, label, "
                                      "final_answer_correct) to judge instead of the synthetic set")
    j.add_argument("--natural", help="natural set JSONL: the model's own steps labelled by the verifier; built "
                                     "from --limit problems of --task when the file does not exist, else reused")
    j.add_argument("--natural-model", help="the model that writes the natural set when it is built "
                                           "(default: --model); build it once with M0 and judge M1, M2 on it")
    from presrm.config import EvalConfig, SearchConfig  # a run's natural set: the same defaults

    j.add_argument("--natural-k", type=int, default=EvalConfig.judge_eval_k,
                   help="candidate steps sampled at each prefix (default: eval.judge_eval_k's)")
    j.add_argument("--natural-max-steps", type=int, default=EvalConfig.judge_eval_max_steps,
                   help="rounds (steps) per problem (default: eval.judge_eval_max_steps's)")
    j.add_argument("--natural-temperature", type=float, default=SearchConfig.temperature,
                   help="sampling temperature of the candidates (default: search.temperature's)")
    j.set_defaults(func=cmd_judge_eval)

    rp = sub.add_parser("reproduce", help="the headline finding from nothing: two arms from one M1, a report card",
                        description="Train M1 from M0, then run two self-rewarding iterations with the model's own "
                                    "likelihood judge and the same two with random ranking from the same M1, "
                                    "evaluate M1 and both final models, compare them paired, and write "
                                    "report_card.md / .html (docs/RESULTS.md). vLLM where it can run, else HF.")
    rp.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "reproduce.yaml"),
                    help="the recipe of the self-judge arm (default: configs/reproduce.yaml)")
    rp.add_argument("--resume", action="store_true", help="continue after a crash, skipping finished stages")
    rp.add_argument("--solution-arm", action="store_true",
                    help="a third arm: solution-level self-rewarding (the paper's baseline) from the same M1, with "
                         "the same judge and problems and no more pairs than the step-level arm; the card pairs "
                         "step-level against solution-level")
    rp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. engine=hf")
    rp.set_defaults(func=cmd_reproduce)

    r = sub.add_parser("report", help="(re)build report.html for a run or eval directory")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    g = sub.add_parser("config", help="print the resolved recipe a run would use, or the reference of every key",
                       description="Print the recipe `presrm train` would run (defaults, then the YAML file, then "
                                   "KEY=VALUE overrides, validated), or with --reference every key with its "
                                   "default and meaning (docs/config.md).")
    g.add_argument("--config", help="recipe YAML (default: the built-in defaults)")
    g.add_argument("--reference", action="store_true", help="print the Markdown reference of every key")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. search.k=4")
    g.set_defaults(func=cmd_config)

    v = sub.add_parser("verify", help="check completions against gold answers and step arithmetic")
    v.add_argument("file", help="JSONL with one completion and gold answer per line")
    v.add_argument("--output", required=True, help="JSONL with per-step verdicts")
    v.add_argument("--completion-key", default="completion")
    v.add_argument("--gold-key", default="answer")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    from presrm.dist import quiet_other_ranks

    quiet_other_ranks()  # under accelerate launch only rank 0 draws bars and logs info lines
    from presrm.progress import configure

    configure()  # log-friendly progress bars when stderr is no terminal, before anything imports tqdm
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "huggingface_hub", "datasets", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    previous = stop_on_signals()
    try:
        return args.func(args)
    except PresrmError as e:
        print("presrm: error: " + " ".join(str(e).splitlines()), file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt:
        restore_signals(previous)
        print("presrm: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Terminated:
        restore_signals(previous)
        print("presrm: terminated (SIGTERM); rerun with --resume to continue", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
