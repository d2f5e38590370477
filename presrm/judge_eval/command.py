"""``presrm judge-eval``: its options (:class:`JudgeEvalArgs`), the natural set it reads or builds, the run,
and the summary it prints. Files go where :class:`presrm.layout.EvalLayout` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presrm.config import EvalConfig, JudgeConfig, SearchConfig
from presrm.engines import registry as engines
from presrm.errors import ConfigError
from presrm.jsonio import write_json, write_jsonl
from presrm.judge_eval.runners import evaluate_judge, evaluate_natural
from presrm.judges.common import template_path
from presrm.judges.registry import modes, spec, template_key
from presrm.labelled import NaturalSet, build_labelled_set, synthetic_protocol
from presrm.layout import EvalLayout

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JUDGE_OPTIONS = ("batch_size", "both_orders", "tie_margin", "max_new_tokens", "prefix_cache", "samples",
                 "temperature")
"""Judge attributes recorded in the protocol when the judge has them."""


def _pointwise() -> JudgeConfig:
    return JudgeConfig(mode="pointwise")


@dataclass(frozen=True)
class JudgeEvalArgs:
    """Options of ``presrm judge-eval`` (see ``presrm judge-eval --help``).

    ``judge`` is a ``judge:`` config section, every setting of the judge measured: a run passes its own, the
    command makes one from its flags (:func:`presrm.judge.judge_config`); both build the judge with
    :func:`presrm.judge.make_judge_from_config`.
    """

    model: str = "embedded"
    judge: JudgeConfig = field(default_factory=_pointwise)
    limit: int = 50
    output_dir: str = "judge-eval"
    adapter: str | None = None
    threshold: float = 0.5
    seed: int = 0
    task: str = "gsm8k"
    tasks_dir: str | None = None
    data_file: str | None = None
    device: str = "auto"
    precision: str = "auto"
    labelled: str | None = None
    natural: str | None = None
    natural_model: str | None = None
    # The natural set's defaults are a run's, so the command and a run's judge evaluation sample the same set.
    natural_k: int = EvalConfig.judge_eval_k
    natural_max_steps: int = EvalConfig.judge_eval_max_steps
    natural_temperature: float = SearchConfig.temperature
    engine: str = engines.DEFAULT
    vllm: Any = None  # a presrm.config.VLLMConfig (engine vllm); None: its defaults
    samples_curve: tuple[int, ...] = ()  # judge scaling: the judge measured again at each judge.samples

    @property
    def mode(self) -> str:
        return self.judge.mode

    @property
    def template(self) -> str | None:
        """The template of the judged mode (its config key: :func:`presrm.judges.registry.template_key`)."""
        key = template_key(self.mode) if self.mode in modes() else None
        return getattr(self.judge, key) if key else None

    def validate(self) -> None:
        j = self.judge
        checks = [
            (self.mode in modes(), f"--judge must be one of {', '.join(modes())}, got {self.mode!r}"),
            (self.engine in engines.names(), f"--engine must be one of {', '.join(engines.names())}, got "
             f"{self.engine!r}"),
            (self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
            (0.0 <= self.threshold <= 1.0 and not math.isnan(self.threshold),
             f"--threshold must be in [0, 1], got {self.threshold}"),
            (self.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16: {self.precision!r}"),
            (j.batch_size >= 1, f"--batch-size must be at least 1, got {j.batch_size}"),
            (j.max_new_tokens >= 1, f"--max-new-tokens must be at least 1, got {j.max_new_tokens}"),
            (0.0 <= j.tie_margin < 1.0, f"--tie-margin must be in [0, 1), got {j.tie_margin}"),
            (not Path(self.output_dir).is_file(), f"--output-dir {self.output_dir} is a file, not a folder"),
            (self.template is None or template_path(self.template, self.mode).is_file(),
             f"--template {self.template} does not exist"),
            (not self.samples_curve or (self.mode in modes() and spec(self.mode).generates),
             f"--samples-curve needs a judge that writes its judgments ("
             f"{', '.join(m for m in modes() if spec(m).generates)}), not {self.mode}"),
            (all(1 <= k <= 64 for k in self.samples_curve), f"--samples-curve values must be in [1, 64], got "
             f"{list(self.samples_curve)}"),
            (self.adapter is None or Path(self.adapter).is_dir(), f"--adapter {self.adapter} is not a folder"),
            (self.labelled is None or Path(self.labelled).is_file(), f"--labelled {self.labelled} is not a file"),
            (self.natural is None or not Path(self.natural).is_dir(), f"--natural {self.natural} is a folder, "
             "not a JSONL file"),
            (self.natural_k >= 2, f"--natural-k must be at least 2, got {self.natural_k}"),
            (self.natural_max_steps >= 1, f"--natural-max-steps must be at least 1, got {self.natural_max_steps}"),
            (0.0 < self.natural_temperature <= 2.0, f"--natural-temperature must be in (0, 2], got "
             f"{self.natural_temperature}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def command(self) -> str:
        """The ``presrm judge-eval`` command line that reproduces this run."""
        parts = ["presrm judge-eval", f"--model {self.model}", f"--judge {self.mode}", f"--limit {self.limit}",
                 f"--output-dir {self.output_dir}", f"--threshold {self.threshold}", f"--seed {self.seed}"]
        optional = {"--precision": None if self.precision == "auto" else self.precision, "--adapter": self.adapter,
                    "--engine": None if self.engine == engines.DEFAULT else self.engine,
                    "--task": self.task if self.task != "gsm8k" else None,
                    "--tasks-dir": self.tasks_dir, "--data-file": self.data_file,
                    "--labelled": self.labelled, "--natural": self.natural, "--natural-model": self.natural_model}
        if self.natural:
            optional.update({"--natural-k": self.natural_k, "--natural-max-steps": self.natural_max_steps,
                             "--natural-temperature": self.natural_temperature})
        if self.samples_curve:
            optional["--samples-curve"] = ",".join(map(str, self.samples_curve))
        flags = [f"{flag} {value}" for flag, value in optional.items() if value is not None]
        return " ".join(parts + flags + self.judge_flags())

    def judge_flags(self) -> list[str]:
        """The flags that give the judge its settings: those its mode reads (``JudgeSpec.options``, and
        ``batch_size``) where they differ from the ``judge:`` section's defaults."""
        default, read = JudgeConfig(), dict.fromkeys(("batch_size", *spec(self.mode).options.values()))
        out = []
        for key in read:
            value = getattr(self.judge, key)
            if value == getattr(default, key):
                continue
            if key == template_key(self.mode):
                out.append(f"--template {value}")
            elif isinstance(value, bool):  # both_orders, prefix_cache: on by default, a flag turns each off
                out.append({"both_orders": "--one-order", "prefix_cache": "--no-prefix-cache"}[key])
            else:
                out.append(f"--{key.replace('_', '-')} {value}")
        return out

    def engine_options(self, *, adapter: bool = True):
        """How to load the judged model (``adapter``: with ``--adapter`` applied)."""
        from presrm.engines import EngineOptions

        return EngineOptions(name=self.engine, device=self.device, precision=self.precision, seed=self.seed,
                             adapter=self.adapter if adapter else None, vllm=self.vllm)


def natural_set_for(args: JudgeEvalArgs, task, engine=None) -> NaturalSet:
    """The natural set at ``args.natural``: read it when it exists, else build it and save it there.

    It is built from ``args.limit`` problems of ``args.task`` by ``args.natural_model`` (default
    ``args.model``) on ``engine`` when given (it must hold that model), else on an engine of its own,
    closed afterwards; the build record beside it names that model.
    """
    from presrm.labelled import build_natural_set, read_natural_set, write_natural_set

    path = Path(args.natural)
    if path.exists():
        nat = read_natural_set(path)
        log.info("Natural set %s: %d steps from %s", path, len(nat.steps), nat.meta.get("generator"))
        return nat
    from presrm.data import load_problems
    from presrm.engines import open_engine
    from presrm.generate import STEP_STOP, step_prompter
    from presrm.search import step_sampler

    generator = args.natural_model or args.model
    if engine is None:
        with open_engine(generator, args.engine_options(adapter=False)) as own:
            return natural_set_for(args, task, own)
    problems = load_problems(task, limit=args.limit, data_file=args.data_file)
    # top_p and max_step_tokens: the search's defaults
    search = SearchConfig(k=args.natural_k, temperature=args.natural_temperature, batch_size=32)
    sampler = step_sampler(engine, search, [STEP_STOP, *task.stop])
    nat = build_natural_set(problems, step_prompter(engine.tok, task), sampler,
                            max_steps=args.natural_max_steps, seed=args.seed)
    nat.meta.update(generator=generator, task=task.name, limit=args.limit, k=args.natural_k,
                    temperature=args.natural_temperature, top_p=search.top_p, max_step_tokens=search.max_step_tokens,
                    hardware=engine.describe()["hardware"], engine=engine.name)
    write_natural_set(path, nat)
    log.info("Natural set written to %s: %s", path, {k: nat.meta[k] for k in ("steps", "correct", "incorrect")})
    return nat


def run_judge_eval(args: JudgeEvalArgs, engine=None) -> dict[str, Any]:
    """Load the labelled sets and the model, judge, and write ``results.json`` and ``samples.jsonl``.

    ``engine``: an open engine holding ``args.model`` to judge on (left open); default: one of its own.

    The main set is ``--labelled FILE`` (ProcessBench format) or else the synthetic set built from
    the task; with ``--natural FILE`` the natural set is judged too (built first when missing).
    """
    from presrm.data import load_problems, load_task
    from presrm.engines import open_engine
    from presrm.judge import make_judge_from_config
    from presrm.labelled import read_processbench

    args.validate()
    task = load_task(args.task, args.tasks_dir)
    if args.labelled:
        labelled = read_processbench(args.labelled)
    else:
        problems = load_problems(task, limit=args.limit, data_file=args.data_file)
        labelled = build_labelled_set(problems, seed=args.seed)
        if not labelled.solutions:
            raise ConfigError(f"no labelled solutions could be built from {len(problems)} problems of task "
                              f"{task.name} (they need GSM8K-style gold solutions with checkable arithmetic)")
    log.info("Labelled set: %s", labelled.stats)
    # The natural set's generator shares the judge's engine when it is the same model; otherwise it is built
    # first, on an engine of its own closed before the judge's opens (two vLLM engines would not fit one GPU).
    shared = (args.natural_model or args.model) == args.model and args.adapter is None
    nat = natural_set_for(args, task) if args.natural and not shared else None
    with contextlib.nullcontext(engine) if engine is not None else open_engine(args.model, args.engine_options()) \
            as engine:
        if args.natural and shared:
            nat = natural_set_for(args, task, engine)
        judge = make_judge_from_config(args.judge, engine, task=args.task, tasks_dir=args.tasks_dir, seed=args.seed)
        metrics, samples = evaluate_judge(judge, labelled, threshold=args.threshold, seed=args.seed)
        nat_metrics, nat_samples = evaluate_natural(judge, nat, seed=args.seed) if nat is not None else (None, [])
        scaling = [scaling_point(args, engine, k, labelled, nat) for k in args.samples_curve]
        described = engine.describe()
    builtin = f"presrm/prompts/{args.mode}.jinja (built-in)" if template_key(args.mode) else None
    protocol = {"mode": args.mode, "template": args.template or builtin,
                "threshold": args.threshold if judge.unit == "step" else None, "model": args.model,
                "adapter": args.adapter, "seed": args.seed, "task": task.name, "limit": args.limit,
                "judge_options": {k: getattr(judge, k) for k in JUDGE_OPTIONS if hasattr(judge, k)},
                **described, "command": args.command()}
    source = ({"source": "processbench-format file", "path": args.labelled} if args.labelled
              else {"source": "synthetic (gold + verifier-confirmed perturbations)", **synthetic_protocol()})
    results = {"schema_version": SCHEMA_VERSION, "protocol": protocol, **metrics,
               "labelled_set": {**labelled.stats, **source}}
    out = EvalLayout(Path(args.output_dir))
    if nat is not None:
        results["natural"] = {"path": args.natural, **nat_metrics}
        write_jsonl(out.natural_samples, nat_samples)
    if scaling:
        results["scaling"] = scaling
    write_jsonl(out.samples, samples)
    write_json(out.results, results)
    return results


def scaling_point(args: JudgeEvalArgs, engine, samples: int, labelled, nat) -> dict[str, Any]:
    """The judge measured with ``judge.samples`` = ``samples`` (the rest of its settings as given) on the labelled
    set and, when there is one, the natural set: one point of the scaling curve."""
    from presrm.judge import make_judge_from_config

    judge = make_judge_from_config(dataclasses.replace(args.judge, samples=samples), engine, task=args.task,
                                   tasks_dir=args.tasks_dir, seed=args.seed)
    metrics, _ = evaluate_judge(judge, labelled, threshold=args.threshold, seed=args.seed)
    point = {"samples": samples, **{k: metrics[k] for k in ("pairwise", "solution_auroc", "step_auroc", "speed")}}
    if nat is not None:
        nat_metrics, _ = evaluate_natural(judge, nat, seed=args.seed)
        point["natural"] = {k: nat_metrics[k] for k in ("pairwise", "step_auroc")}
    return point


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few human-readable lines for the CLI."""
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    pb, pw, n, sp = results["processbench"], results["pairwise"], results["n"], results["speed"]
    lines = [f"{results['protocol']['mode']} judge on {n['solutions']} solutions "
             f"({n['correct_solutions']} correct, {n['flawed_solutions']} flawed) from {n['problems']} problems"]
    if pb.get("f1") is not None or "acc_flawed" in pb:
        lines.append(f"ProcessBench F1 {fmt(pb['f1'])} (first error {fmt(pb['acc_flawed'])}, "
                     f"no error {fmt(pb['acc_correct'])}); step AUROC {fmt(results['step_auroc']['value'])}")
    if pw.get("accuracy") is not None:
        lines.append(f"pairwise accuracy {fmt(pw['accuracy'])} (ties {fmt(pw['tie_rate'])}, "
                     f"unparseable {fmt(pw['unparseable_rate'])}, n={pw['n']})")
    if results["solution_auroc"].get("value") is not None:
        lines.append(f"solution AUROC {fmt(results['solution_auroc']['value'])} "
                     f"({results['solution_auroc']['score']})")
    lines.append(f"{fmt(sp['steps_per_s'])} steps judged/s ({sp['judged']} {sp['unit']}s in {sp['seconds']:.1f} s)")
    nat = results.get("natural")
    if nat:
        auc, npw = nat["step_auroc"], nat["pairwise"]

        def ci(block: dict[str, Any]) -> str:
            return "" if not block.get("ci95") else f" [{block['ci95'][0]:.3f}, {block['ci95'][1]:.3f}]"
        lines.append(f"natural set ({nat['set'].get('steps')} steps by {nat['set'].get('generator')}): "
                     f"step AUROC {fmt(auc.get('value'))}{ci(auc)} ({auc.get('n_correct', 0)} right, "
                     f"{auc.get('n_incorrect', 0)} wrong); pairwise accuracy {fmt(npw['accuracy'])}{ci(npw)} "
                     f"(n={npw['n']} couples at the same prefix)")
    for point in results.get("scaling", []):
        figure = ("solution AUROC", point["solution_auroc"].get("value")) if point["pairwise"].get(
            "accuracy") is None else ("pairwise accuracy", point["pairwise"]["accuracy"])
        natural = point.get("natural", {}).get("pairwise", {}).get("accuracy")
        lines.append(f"samples {point['samples']}: {figure[0]} {fmt(figure[1])}"
                     + (f"; natural pairwise accuracy {fmt(natural)}" if "natural" in point else ""))
    return lines
