"""What ``presrm train`` prints when a run ends: each evaluated model, each iteration, and the first evaluated
model against the final one, paired, with intervals, so the run's own files say whether it helped.

>>> pct(0.25), interval([0.1, 0.4]), interval(None), pvalue(0.0004)
('25.0%', ' [10.0%, 40.0%]', '', '< 0.001')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from presrm.layout import RunLayout


def pct(x: float | None, signed: bool = False) -> str:
    """A share as a percentage with one decimal (``signed``: with its sign, for differences); n/a for None."""
    return "n/a" if x is None else f"{100 * x:{'+' if signed else ''}.1f}%"


def interval(ci: list[float] | None, signed: bool = False) -> str:
    """`` [low, high]`` in percent after a figure; nothing when there is no interval."""
    return "" if not ci else f" [{pct(ci[0], signed)}, {pct(ci[1], signed)}]"


def pvalue(p: float | None) -> str:
    """A p-value as printed: three decimals, ``< 0.001`` below that, n/a for None."""
    return "n/a" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def model_line(label: str, s: dict[str, Any]) -> str:
    """One evaluated model: strict accuracy, the step error rate, repeats and no answer, with 95% intervals."""
    strict, se = s["strict"], s.get("step_errors") or {}
    parts = [f"{label}: strict {strict['correct']}/{s['n']} ({pct(strict['accuracy'])}{interval(strict['ci95'])})"]
    if se.get("rate") is not None:
        parts.append(f"step error rate {pct(se['rate'])}{interval(se.get('ci95'))} ({se['wrong']} of "
                     f"{se['verifiable']} verifiable steps)")
    for key, what in (("repeats", "repeats a step"), ("no_answer", "no answer")):
        if s.get(key):
            parts.append(f"{what} {s[key]['count']}/{s['n']}")
    return "; ".join(parts)


def _evaluations(run: RunLayout, summary: dict[str, Any]) -> list[tuple[str, dict[str, Any], Path]]:
    """``(label, summary, eval.json)`` of each model the run evaluated, in training order."""
    shift = 1 if "init" in summary else 0
    out = []
    if "before" in summary:
        out.append(("M0 (before)", summary["before"], run.iteration(0).eval_files("eval_before")[0]))
    if "eval" in summary.get("init", {}):
        out.append(("M1 (after init)", summary["init"]["eval"], run.init.eval_files("eval")[0]))
    for it in summary["iterations"]:
        if "eval" in it:
            k = it["iteration"]
            out.append((f"M{k + 1 + shift} (after iteration {k})", it["eval"], run.iteration(k).eval_files("eval")[0]))
    return out


def paired_line(first: tuple[str, dict, Path], last: tuple[str, dict, Path]) -> str:
    """The first evaluated model against the last, on the problems both evaluated (``presrm compare --common``)."""
    from presrm.compare import compare_runs

    c = compare_runs(first[2], last[2], common=True)
    se, s = c["step_errors"], c["strict"]
    name_a, name_b = first[0].split(" ")[0], last[0].split(" ")[0]
    parts = [f"{name_a} -> {name_b}, paired on {c['n']} problems: strict {s['correct_a']} -> {s['correct_b']} "
             f"(McNemar p {pvalue(s['p_exact'])})"]
    if se.get("difference") is not None:
        parts.append(f"step error rate {pct(se['difference'], True)}{interval(se['ci95'], True)} "
                     f"(paired bootstrap p {pvalue(se['p_bootstrap'])})")
    for key, what in (("repeats", "repeats"), ("no_answer", "no answer")):
        r = c[key]
        parts.append(f"{what} {r['count_a']} -> {r['count_b']} (p {pvalue(r['p_exact'])})")
    return "; ".join(parts)


def run_lines(summary: dict[str, Any]) -> list[str]:
    """The lines ``presrm train`` prints for a finished run's ``summary`` (``presrm.loop.run``'s return)."""
    run = RunLayout(Path(summary["run_dir"]))
    evaluations = _evaluations(run, summary)
    lines = [f"Run directory: {summary['run_dir']}"]
    by_label = {label: s for label, s, _ in evaluations}
    if "M0 (before)" in by_label:
        lines.append(model_line("M0 (before)", by_label["M0 (before)"]))
    init = summary.get("init")
    if init and "train" in init:
        tr = init["train"]
        lines.append(f"Init (IFT/EFT): {tr['ift_examples']} IFT + {tr['eft_examples']} EFT examples, "
                     f"{tr['optimizer_steps']} SFT steps")
    elif init:
        lines.append(f"Init: M1 is {init['model']} (init.model; no IFT/EFT)")
    if "M1 (after init)" in by_label:
        lines.append(model_line("M1 (after init)", by_label["M1 (after init)"]))
    for it in summary["iterations"]:
        tr, st = it["train"], it["search"]
        loss = "n/a" if tr["first_loss"] is None else f"{tr['first_loss']:.4f} -> {tr['last_loss']:.4f}"
        lines.append(f"Iteration {it['iteration']}: trained on {it['pairs']} step pairs ({tr['optimizer_steps']} DPO "
                     f"steps, loss {loss}); {st['finished']}/{st['problems']} searches finished, "
                     f"{st['mean_steps']:.2f} steps per solution")
        jv = st["judge_verifier"]
        lines.append(f"  judge-verifier agreement in search: right step ranked above wrong in "
                     f"{pct(jv['within_step_agreement'])} of {jv['right_vs_wrong_couples']} couples (50%: chance)")
        if it.get("guard"):
            g = it["guard"]
            lines.append(f"  collapse guard ({g['mode']}): {'promoted' if g['promoted'] else 'NOT promoted'}, "
                         f"{g['line']}")
        for label, s, _ in evaluations:
            if label.endswith(f"(after iteration {it['iteration']})"):
                lines.append("  " + model_line(label, s))
    if summary.get("stopped"):
        lines.append(f"The collapse guard ended the run: {summary['stopped']}; final model {summary['final_model']}")
    if len(evaluations) >= 2:
        lines.append(paired_line(evaluations[0], evaluations[-1]))
    agreement = evaluations[-1][1].get("judge_agreement") if evaluations else None
    report = f"Report: {summary['report']}"
    if agreement and agreement.get("value") is not None:
        report += (f" (steps coloured by the run's judge; its AUROC against the verifier on the last evaluation's "
                   f"steps: {agreement['value']:.3f}{_ci3(agreement.get('ci95'))})")
    lines.append(report)
    return lines


def _ci3(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
