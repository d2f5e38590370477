"""Where every file of a run directory and of an evaluation folder lives: the layout, described once.

``presrm.loop`` writes through :class:`RunLayout`, ``presrm.report`` reads
through it, and ``--resume`` asks it which stages are complete; ``presrm eval``
and ``presrm compare`` use :class:`EvalLayout`. No other module spells these
names. A run directory (every file written atomically, every model folder saved
aside and renamed into place)::

    <output_dir>/<name>/            RunLayout(root)
        config.yaml                 resolved config, library versions, seed, git hash         .config
        natural.jsonl               with eval.judge_eval: M0's own steps on eval problems      .natural
        stages.jsonl                every stage that ran (not those skipped on resume): label, seconds  .stages
        logs/                       with train.report_to: the loop's per-iteration figures    .logs
        model_card.md               with train.push_to_hub                                    .model_card
        report.html, report.json                                                              .report_html/_json
        init/                       StageDir: M0 -> M1 by IFT/EFT (init.ift / init.eft)       .init
            ift.jsonl, eft.jsonl, on_policy.jsonl       SFT examples; M0's own labelled steps
            adapter/, model/, train.json                the SFT; model/ is M1, iteration 0's policy and judge
            given.json                                  instead, with init.model: which folder M1 is (no SFT)
            eval.json, eval_samples.jsonl, judge_eval/  M1 evaluated; M1 as a judge
        iter_k/                     StageDir: iteration k                                     .iteration(k)
            eval_before.json, eval_before_samples.jsonl, judge_eval_before/   (k = 0 only) M0 evaluated
            samples.jsonl, search.json, pairs.jsonl     step search: every decision, figures, the pairs
            adapter/, model/, train.json                step-DPO; model/ is the next policy and judge
            eval.json, eval_samples.jsonl, judge_eval/  that model evaluated, and as a judge
            dev_eval.json, dev_eval_samples.jsonl       with loop.guard: that model on the guard's dev slice
            guard.json                                  with loop.guard: promoted, or not, and why

A stage is complete when the file it writes last exists (:meth:`StageDir.searched`,
:meth:`StageDir.trained`, :meth:`StageDir.evaluated`); ``--resume`` skips complete
stages and redoes the others. An evaluation folder (``presrm eval``,
``judge-eval``) holds ``results.json``, ``samples.jsonl`` (judge-eval with ``--natural``: also
``natural_samples.jsonl``) and the report.

>>> run = RunLayout(Path("runs/quickstart"))
>>> run.iteration(0).pairs.as_posix(), run.policy(1, "embedded")
('runs/quickstart/iter_0/pairs.jsonl', 'runs/quickstart/iter_0/model')
>>> [p.name for p in run.iteration(0).eval_files("eval_before")]
['eval_before.json', 'eval_before_samples.jsonl']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = "results.json"
SAMPLES = "samples.jsonl"
NATURAL_SAMPLES = "natural_samples.jsonl"


def samples_for(summary: Path) -> Path:
    """The per-problem samples written next to an evaluation summary.

    >>> samples_for(Path("out/results.json")).name, samples_for(Path("iter_0/eval.json")).name
    ('samples.jsonl', 'eval_samples.jsonl')
    """
    return summary.with_name(SAMPLES if summary.name == RESULTS else f"{summary.stem}_samples.jsonl")


@dataclass(frozen=True)
class EvalLayout:
    """An evaluation folder: ``results.json`` (the summary), ``samples.jsonl`` (one record per problem)."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def samples(self) -> Path:
        return samples_for(self.results)

    @property
    def natural_samples(self) -> Path:
        """judge-eval with ``--natural``: one record per judged step (or couple) of the natural set."""
        return self.root / NATURAL_SAMPLES


@dataclass(frozen=True)
class StageDir:
    """``init/`` or ``iter_k/``: the files of one model's stages (see the module docstring)."""

    path: Path

    samples = property(lambda self: self.path / "samples.jsonl", doc="step search: every candidate and decision")
    search = property(lambda self: self.path / "search.json", doc="step search: outcomes and agreement figures")
    pairs = property(lambda self: self.path / "pairs.jsonl", doc="step search: the preference pairs (written last)")
    adapter = property(lambda self: self.path / "adapter", doc="the trained LoRA adapter (peft format)")
    model = property(lambda self: self.path / "model", doc="the trained model, merged: the next policy and judge")
    train = property(lambda self: self.path / "train.json", doc="training metrics (written last)")
    ift = property(lambda self: self.path / "ift.jsonl", doc="init: IFT examples")
    eft = property(lambda self: self.path / "eft.jsonl", doc="init: EFT examples")
    on_policy = property(lambda self: self.path / "on_policy.jsonl", doc="init: M0's own verifier-labelled steps")
    given = property(lambda self: self.path / "given.json", doc="init: the M1 folder init.model names (no SFT)")
    guard = property(lambda self: self.path / "guard.json", doc="the collapse guard's verdict on this model")

    def eval_files(self, name: str = "eval") -> tuple[Path, Path]:
        """The summary and the samples of evaluation ``name`` (``eval``, or ``eval_before`` for M0)."""
        summary = self.path / f"{name}.json"
        return summary, samples_for(summary)

    def judge_eval(self, name: str = "judge_eval") -> EvalLayout:
        """The folder of judge evaluation ``name`` (``judge_eval``, or ``judge_eval_before`` for M0)."""
        return EvalLayout(self.path / name)

    def searched(self) -> bool:
        return self.pairs.exists() and self.samples.exists() and self.search.exists()

    def trained(self) -> bool:
        return (self.model / "config.json").exists() and self.train.exists()

    def evaluated(self, name: str = "eval") -> bool:
        return self.eval_files(name)[0].exists()


@dataclass(frozen=True)
class RunLayout:
    """A run directory (see the module docstring)."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    natural = property(lambda self: self.root / "natural.jsonl")
    stages = property(lambda self: self.root / "stages.jsonl", doc="one line per stage run: label, seconds, when")
    logs = property(lambda self: self.root / "logs")
    model_card = property(lambda self: self.root / "model_card.md")
    report_html = property(lambda self: self.root / "report.html")
    report_json = property(lambda self: self.root / "report.json")

    @property
    def init(self) -> StageDir:
        return StageDir(self.root / "init")

    def iteration(self, k: int) -> StageDir:
        return StageDir(self.root / f"iter_{k}")

    def iterations(self) -> list[int]:
        """The iterations that have a folder, in order."""
        found = []
        for p in self.root.glob("iter_*"):
            suffix = p.name.removeprefix("iter_")
            if p.is_dir() and suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def policy(self, k: int, base: str, *, init: bool | str | None = False) -> str:
        """The model spec iteration ``k`` searches and judges with, else iteration k-1's model. For k = 0: M1
        when there is one (``init`` True: ``init/model``, trained by IFT/EFT; a string: that folder, the
        recipe's ``init.model``), else M0 (``base``).

        >>> RunLayout(Path("r")).policy(0, "embedded", init="runs/a/init/model")
        'runs/a/init/model'
        """
        if k == 0:
            return init if isinstance(init, str) else str(self.init.model) if init else base
        return str(self.iteration(k - 1).model)

    def final_model(self, iterations: int, *, init: bool | str = False) -> Path | None:
        """The last model a run of ``iterations`` promotes (None when it trains none): the last iteration's, unless
        the collapse guard did not promote an iteration's model (its ``guard.json``), then that iteration's policy
        (``init`` as in :meth:`policy`).

        >>> RunLayout(Path("r")).final_model(2).as_posix()
        'r/iter_1/model'
        """
        for k in range(iterations):
            guard = self.iteration(k).guard
            if guard.is_file() and json.loads(guard.read_text()).get("promoted") is False:
                return Path(self.policy(k, str(init), init=init)) if k or init else None
        if iterations:
            return self.iteration(iterations - 1).model
        return self.init.model if init is True else Path(init) if init else None
