"""Experiment trackers: the loop's per-iteration figures go where the trainers' logs go (``train.report_to``).

The trainers (TRL's ``DPOTrainer`` and ``SFTTrainer``) log their steps through transformers' callbacks;
the loop adds what only it knows, one point per model or iteration: accuracy (step = the model's number,
M0 = 0), and per iteration (step = k) the pairs, how search went, judge-verifier agreement and the loss.
Tracker backends are accelerate's (TensorBoard, W&B, trackio, MLflow, Comet, Aim, ClearML, DVCLive,
SwanLab); a name transformers knows but accelerate has no tracker for gets the trainers' logs only.

With TensorBoard the loop writes ``<run>/logs/loop`` and each trainer ``<run>/<stage>/logs``, so
``tensorboard --logdir runs/<name>`` shows them all. Only rank 0 logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from presrm import dist
from presrm.errors import ConfigError
from presrm.layout import RunLayout

log = logging.getLogger(__name__)


def report_to_list(value: str | list) -> list[str]:
    """``train.report_to`` as a list of names: ``"none"`` is none, ``"all"`` stays for transformers to expand.

    >>> report_to_list("none"), report_to_list("tensorboard"), report_to_list(["wandb", "tensorboard"])
    ([], ['tensorboard'], ['wandb', 'tensorboard'])
    """
    names = [value] if isinstance(value, str) else list(value)
    return [str(n) for n in names if str(n) != "none"]


def resolve_report_to(value: str | list) -> list[str]:
    """The tracker names ``train.report_to`` means, checked: known to transformers and installed.

    ``"all"`` is every tracker installed. A wrong name or a missing package is a :class:`ConfigError` that
    names the key, raised when the run starts rather than when the first trainer does, hours later.
    """
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = report_to_list(value)
    if "all" in names:
        return sorted(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"train.report_to: unknown tracker {name!r} (known: "
                              f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}, all, none)")
        if name not in get_available_reporting_integrations():
            raise ConfigError(f"train.report_to: {name} is not installed (pip install {name})")
    return names


def figures(summary: dict[str, Any]) -> Iterator[tuple[str, int, float]]:
    """``(tag, step, value)`` for every figure in a run summary (:func:`presrm.loop.run`'s, so far).

    >>> s = {"before": {"strict": {"accuracy": 0.25}, "flexible": {"accuracy": 0.5}}, "iterations": []}
    >>> sorted(figures(s))
    [('eval/flexible_accuracy', 0, 0.5), ('eval/strict_accuracy', 0, 0.25)]
    """
    def accuracy(ev: dict[str, Any] | None, m: int) -> Iterator[tuple[str, int, float]]:
        for kind in ("strict", "flexible"):
            if ev and kind in ev:
                yield f"eval/{kind}_accuracy", m, ev[kind]["accuracy"]

    yield from accuracy(summary.get("before"), 0)
    init = summary.get("init") or {}
    yield from accuracy(init.get("eval"), 1)
    shift = 1 if init else 0
    for it in summary.get("iterations", []):
        k = it["iteration"]
        st, tr = it.get("search", {}), it.get("train", {})
        jv = st.get("judge_verifier", {})
        values = {"search/pairs": it.get("pairs"), "search/problems": st.get("problems"),
                  "search/finished": st.get("finished"), "search/mean_steps": st.get("mean_steps"),
                  "search/rollbacks": st.get("rollbacks"),
                  "judge_verifier/within_step_agreement": jv.get("within_step_agreement"),
                  "judge_verifier/match_agreement": jv.get("match_agreement"),
                  "judge_verifier/pointwise_agreement": jv.get("pointwise_agreement"),
                  "train/first_loss": tr.get("first_loss"), "train/last_loss": tr.get("last_loss"),
                  "train/reward_accuracy": tr.get("last_reward_accuracy"),
                  "train/optimizer_steps": tr.get("optimizer_steps")}
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield tag, k, float(value)
        yield from accuracy(it.get("eval"), k + 1 + shift)


class RunTracker:
    """Sends a run's :func:`figures` to its trackers, each figure once (:meth:`update` may see it again on resume
    or as the summary grows). Without trackers, or on a rank other than 0, it does nothing."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers
        self.logged: set[tuple[str, int]] = set()

    @classmethod
    def for_run(cls, report_to: str | list, root: Path, run_name: str) -> RunTracker:
        names = resolve_report_to(report_to)
        if not dist.is_main():
            return cls([])
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        trackers = []
        for name in names:
            kind = LOGGER_TYPE_TO_CLASS.get(name)
            if kind is None:
                log.warning("train.report_to: %s gets the trainers' logs only (accelerate has no %s tracker for "
                            "the loop's figures)", name, name)
                continue
            tracker = kind("loop", str(RunLayout(root).logs)) if kind.requires_logging_directory else kind(run_name)
            tracker.start()
            trackers.append(tracker)
        return cls(trackers)

    def update(self, summary: dict[str, Any]) -> None:
        """Log the figures of ``summary`` not logged yet, grouped by step."""
        if not self.trackers:
            return
        by_step: dict[int, dict[str, float]] = {}
        for tag, step, value in figures(summary):
            if (tag, step) not in self.logged:
                self.logged.add((tag, step))
                by_step.setdefault(step, {})[tag] = value
        for step in sorted(by_step):
            for tracker in self.trackers:
                tracker.log(by_step[step], step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
