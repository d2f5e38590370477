"""``presrm reproduce``: the headline finding from nothing, in one command, ending in a one-page report card.

Two arms from one M1 (docs/RESULTS.md, "The judge ablation"):

- ``self_judge``: the recipe as given (``configs/reproduce.yaml``: M0 -> M1 by IFT, then two self-rewarding
  iterations ranked by the model's own likelihood judge);
- ``random``: the same iterations from the same M1 (``init.model``: the first arm's ``init/model``), the same
  seeds and problems, with ``judge.mode=random``: the candidates ranked by a seeded hash, the verifier's
  grounding unchanged.

M1 and both final models are evaluated on the recipe's test problems (the full 1,319 by default), and the card
pairs them: the final model against M1, and the self-judge arm against the random arm (McNemar on accuracy,
repeats and no answer; paired bootstrap on the step error rate). Each arm is an ordinary run folder under
``<output_dir>/<name>/``, so ``--resume`` continues after a crash, even ``kill -9``, exactly as
``presrm train --resume`` does; the card is rebuilt from the files every time.

>>> reproduce(load_config("configs/reproduce.yaml", []), resume=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

from presrm.compare import compare_runs
from presrm.config import RunConfig
from presrm.errors import RunStateError
from presrm.jsonio import read_json, read_jsonl, read_yaml, write_json, write_text_atomic
from presrm.layout import RunLayout
from presrm.summary import interval, pct, pvalue

log = logging.getLogger(__name__)

ARMS = ("self_judge", "random")
SOLUTION_ARM = "solution"
"""The optional third arm (``presrm reproduce --solution-arm``): solution-level self-rewarding from the same M1."""
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class CardLayout:
    """Where ``presrm reproduce`` writes: one run folder per arm, and the card beside them."""

    root: Path

    def arm(self, name: str) -> RunLayout:
        return RunLayout(self.root / name)

    card_md = property(lambda self: self.root / "report_card.md")
    card_html = property(lambda self: self.root / "report_card.html")
    card_json = property(lambda self: self.root / "report_card.json")


def pick_engine(overrides: list[str]) -> str | None:
    """``vllm`` where it can run here and no ``engine=`` override says otherwise, else ``hf``; None when the
    overrides name the engine themselves."""
    if any(o.split("=", 1)[0].strip() == "engine" for o in overrides):
        return None
    from presrm.engines import registry

    reason = registry.spec("vllm").unavailable()
    if reason:
        log.info("reproduce: engine hf (vLLM cannot run here: %s)", reason)
        return "hf"
    log.info("reproduce: engine vllm")
    return "vllm"


def arm_configs(cfg: RunConfig, *, solution: bool = False) -> dict[str, RunConfig]:
    """The arms' recipes: ``cfg`` itself, the random-ranking arm from its M1, and with ``solution`` the
    solution-level arm from its M1 (the same judge and problems, ``search.granularity: solution``; its pair cap,
    the self-judge arm's pair count per iteration, is set once that arm has searched: :func:`level_pairs`)."""
    if cfg.iterations < 1 or not (cfg.init.ift or cfg.init.eft):
        raise RunStateError("reproduce needs a recipe that trains M1 (init.ift or init.eft) and runs at least one "
                            "iteration from it")
    card = CardLayout(Path(cfg.output_dir) / cfg.name)
    own = dataclasses.replace(cfg, output_dir=str(card.root), name="self_judge")
    m1 = card.arm("self_judge").init.model
    random_arm = dataclasses.replace(
        own, name="random", judge=dataclasses.replace(cfg.judge, mode="random"),
        init=dataclasses.replace(cfg.init, ift=False, eft=False, model=str(m1), evaluate=False),
        eval=dataclasses.replace(cfg.eval, before=False, judge_eval=False))
    arms = {"self_judge": own, "random": random_arm}
    if solution:
        arms[SOLUTION_ARM] = dataclasses.replace(
            random_arm, name=SOLUTION_ARM, judge=cfg.judge,
            search=dataclasses.replace(cfg.search, granularity="solution"))
    return arms


def level_pairs(arm: RunConfig, card: CardLayout, iterations: int) -> RunConfig:
    """``arm`` with ``search.max_pairs`` at the self-judge arm's pair count of each iteration, so that the
    solution-level arm trains on no more pairs than the step-level one (the first in problem order)."""
    own = card.arm("self_judge")
    counts = []
    for k in range(iterations):
        pairs = own.iteration(k).pairs
        if not pairs.is_file():
            raise RunStateError(f"{pairs} is missing: the self-judge arm must search before the solution-level arm")
        counts.append(max(len(read_jsonl(pairs)), 1))
    return dataclasses.replace(arm, search=dataclasses.replace(arm.search, max_pairs=counts))


def reproduce(cfg: RunConfig, *, resume: bool = False, solution: bool = False) -> dict[str, Any]:
    """Run the arms (each resumable), then compare and write the card; return the card's data. ``solution``:
    the solution-level arm too (the paper's baseline, :data:`SOLUTION_ARM`)."""
    from presrm.loop import run

    arms = arm_configs(cfg, solution=solution)
    card = CardLayout(Path(cfg.output_dir) / cfg.name)
    if card.root.exists() and any(card.root.iterdir()) and not resume:
        raise RunStateError(f"{card.root} already exists; pass --resume to continue it, or choose another "
                            "name=... / output_dir=...")
    for name, arm in arms.items():
        log.info("reproduce: arm %s", name)
        run(level_pairs(arm, card, cfg.iterations) if name == SOLUTION_ARM else arm, resume=resume)
    data = collect(card.root, iterations=cfg.iterations)
    write_card(card, data)
    return data


def _final_eval(arm: RunLayout, iterations: int) -> Path:
    return arm.iteration(iterations - 1).eval_files("eval")[0]


def _auroc(folder: Path) -> dict[str, Any] | None:
    results = folder / "results.json"
    if not results.is_file():
        return None
    natural = read_json(results).get("natural") or {}
    return natural.get("step_auroc")


def _model_row(label: str, path: Path) -> dict[str, Any]:
    """One model's line of the card from its evaluation (repeats and no answer counted from the samples where
    the summary predates them)."""
    from presrm.evaluate import degeneration
    from presrm.layout import samples_for

    summary = read_json(path)
    if "repeats" not in summary:
        summary.update(degeneration(read_jsonl(samples_for(path))))
    se = summary.get("step_errors") or {}
    return {"model": label, "n": summary["n"], "strict": summary["strict"], "flexible": summary["flexible"],
            "step_errors": {"rate": se.get("rate"), "ci95": se.get("ci95"), "wrong": se.get("wrong"),
                            "verifiable": se.get("verifiable")},
            "repeats": summary.get("repeats"), "no_answer": summary.get("no_answer"),
            "mean_steps": summary.get("mean_steps")}


def _stages(arm: str, layout: RunLayout) -> list[dict[str, Any]]:
    path = layout.stages
    return [{"arm": arm, **r} for r in read_jsonl(path)] if path.is_file() else []


def collect(root: str | Path, *, iterations: int) -> dict[str, Any]:
    """The card's data, read from the two arms' run folders under ``root``."""
    card = CardLayout(Path(root))
    own, rnd = card.arm("self_judge"), card.arm("random")
    m1_eval, own_eval, rnd_eval = own.init.eval_files("eval")[0], _final_eval(own, iterations), _final_eval(rnd,
                                                                                                           iterations)
    last = f"M{iterations + 1}"
    models = [("M1", m1_eval), (f"{last}, self-judge", own_eval), (f"{last}, random ranking", rnd_eval)]
    missing = [str(p) for _, p in models if not p.is_file()]
    if missing:
        raise RunStateError(f"the reproduction is not complete: {', '.join(missing)} missing; rerun with --resume")
    sol = card.arm(SOLUTION_ARM)
    sol_eval = _final_eval(sol, iterations) if sol.root.is_dir() else None
    if sol_eval is not None and not sol_eval.is_file():
        raise RunStateError(f"the reproduction is not complete: {sol_eval} missing; rerun with --resume")
    if sol_eval is not None:
        models.append((f"{last}, solution-level", sol_eval))
    rows = [_model_row(label, path) for label, path in models]
    comparisons = {
        "self_vs_m1": compare_runs(m1_eval, own_eval, common=True),
        "self_vs_random": compare_runs(rnd_eval, own_eval, common=True),
        "random_vs_m1": compare_runs(m1_eval, rnd_eval, common=True),
    }
    if sol_eval is not None:
        comparisons.update(solution_vs_m1=compare_runs(m1_eval, sol_eval, common=True),
                           self_vs_solution=compare_runs(sol_eval, own_eval, common=True))
    judges = [{"model": "M0", "auroc": _auroc(own.iteration(0).path / "judge_eval_before")},
              {"model": "M1", "auroc": _auroc(own.init.path / "judge_eval")}]
    judges += [{"model": f"M{k + 2}, self-judge", "auroc": _auroc(own.iteration(k).path / "judge_eval")}
               for k in range(iterations)]
    saved = read_yaml(own.config) or {}
    protocol = read_json(own_eval).get("protocol") or {}
    hardware = protocol.get("hardware") or {}

    def finding(key: str, what: str) -> dict[str, Any]:
        se = comparisons[key]["step_errors"]
        diff, p = se.get("difference"), se.get("p_bootstrap")
        return {"what": what, "difference": diff, "ci95": se.get("ci95"), "p": p,
                "holds": diff is not None and p is not None and diff < 0 and p < ALPHA}

    return {
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "root": str(card.root), "iterations": iterations, "alpha": ALPHA,
        "findings": [finding("self_vs_m1", f"the final model ({last}) has a lower step error rate than M1"),
                     finding("self_vs_random", "the self-judge arm has a lower step error rate than the "
                                               "random-ranking arm")],
        "models": rows, "comparisons": comparisons,
        "judges": [j for j in judges if j["auroc"] is not None],
        "stages": _stages("self_judge", own) + _stages("random", rnd)
        + (_stages(SOLUTION_ARM, sol) if sol_eval is not None else []),
        "machine": {"cpu": hardware.get("cpu"), "cores": os.cpu_count(), "device": hardware.get("device"),
                    "precision": protocol.get("dtype"), "engine": protocol.get("engine"),
                    "processes": protocol.get("processes")},
        "git": saved.get("git"), "versions": saved.get("versions") or {},
        "recipe": saved.get("config") or {},
    }


def finding_line(f: dict[str, Any]) -> str:
    """One finding in a line: whether it holds, the step error difference, its interval and p-value.

    >>> finding_line({"what": "x", "difference": -0.1, "ci95": [-0.15, -0.05], "p": 0.0004, "holds": True})
    'HOLDS: x: -10.0% [-15.0%, -5.0%], p < 0.001'
    """
    p = pvalue(f["p"])
    return (f"{'HOLDS' if f['holds'] else 'does not hold'}: {f['what']}: {pct(f['difference'], True)}"
            f"{interval(f['ci95'], True)}, p {p if p[0] in '<n' else '= ' + p}")


def sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The card as titled tables of formatted cells: one layout for the Markdown and the HTML card."""
    def share(block: dict[str, Any] | None, count: str = "count", rate: str = "share") -> str:
        return "n/a" if not block else f"{block[count]} ({pct(block[rate])}{interval(block.get('ci95'))})"

    def test(block: dict[str, Any], key: str = "p_exact") -> str:
        return f"{block['count_a']} -> {block['count_b']} (p {pvalue(block[key])})"

    out = [{"title": "Findings", "note": f"Each holds when the difference is below 0 at p < {data['alpha']} "
                                         "(paired bootstrap over problems).",
            "headers": ["finding", "step error difference", "95% CI", "p", "holds"],
            "rows": [[f["what"], pct(f["difference"], True), interval(f["ci95"], True).strip(), pvalue(f["p"]),
                      "yes" if f["holds"] else "no"] for f in data["findings"]]}]
    out.append({"title": "Models", "note": "Accuracy and shares: Wilson 95% intervals. Step error rate: wrong / "
                                           "verifiable steps, pooled, 95% bootstrap interval over problems.",
                "headers": ["model", "problems", "strict", "flexible", "step error rate", "repeats a step",
                            "no answer", "steps per solution"],
                "rows": [[m["model"], str(m["n"]), share(m["strict"], "correct", "accuracy"),
                          share(m["flexible"], "correct", "accuracy"),
                          f"{pct(m['step_errors']['rate'])}{interval(m['step_errors']['ci95'])} "
                          f"({m['step_errors']['wrong']} of {m['step_errors']['verifiable']})",
                          share(m["repeats"]), share(m["no_answer"]), f"{m['mean_steps'] or 0:.1f}"]
                         for m in data["models"]]})
    rows = []
    for key, label in (("self_vs_m1", "M1 -> self-judge"), ("random_vs_m1", "M1 -> random ranking"),
                       ("self_vs_random", "random ranking -> self-judge"),
                       ("solution_vs_m1", "M1 -> solution-level"),
                       ("self_vs_solution", "solution-level -> step-level (self-judge)")):
        if key not in data["comparisons"]:
            continue
        c = data["comparisons"][key]
        se = c["step_errors"]
        rows.append([f"{label} ({c['n']} problems)",
                     f"{c['strict']['correct_a']} -> {c['strict']['correct_b']} (p {pvalue(c['strict']['p_exact'])})",
                     f"{c['flexible']['correct_a']} -> {c['flexible']['correct_b']} "
                     f"(p {pvalue(c['flexible']['p_exact'])})",
                     f"{pct(se.get('difference'), True)}{interval(se.get('ci95'), True)} "
                     f"(p {pvalue(se.get('p_bootstrap'))})",
                     test(c["repeats"]), test(c["no_answer"])])
    out.append({"title": "Paired comparisons", "note": "A -> B on the same problems: correct counts with McNemar's "
                                                       "exact p; step error rate B - A with its paired bootstrap "
                                                       "interval and p; repeats and no answer with McNemar's p.",
                "headers": ["A -> B", "strict", "flexible", "step error rate", "repeats a step", "no answer"],
                "rows": rows})
    out.append({"title": "The self-judge, measured", "note": "Natural-set step AUROC of each model as its own judge "
                                                              "(M0's sampled steps, labelled by the verifier).",
                "headers": ["model", "step AUROC", "95% CI", "right / wrong steps"],
                "rows": [[j["model"], "n/a" if j["auroc"].get("value") is None else f"{j['auroc']['value']:.3f}",
                          "" if not j["auroc"].get("ci95") else "[{:.3f}, {:.3f}]".format(*j["auroc"]["ci95"]),
                          f"{j['auroc'].get('n_correct')} / {j['auroc'].get('n_incorrect')}"]
                         for j in data["judges"]]})
    total = sum(s["seconds"] for s in data["stages"])
    out.append({"title": "Stage wall times", "note": "Stages skipped on a resume are not listed again.",
                "headers": ["arm", "stage", "wall time"],
                "rows": [[s["arm"], s["stage"], _mins(s["seconds"])] for s in data["stages"]]
                + [["all arms", "total", _mins(total)]]})
    m = data["machine"]
    out.append({"title": "Machine and versions", "note": "", "headers": ["what", "value"],
                "rows": [["CPU", f"{m['cpu']} ({m['cores']} cores)"], ["device", str(m["device"])],
                         ["precision", str(m["precision"])], ["engine", str(m["engine"])],
                         ["processes", str(m["processes"])], ["commit", str(data["git"])]]
                + [[k, str(v)] for k, v in sorted(data["versions"].items())]})
    return out


def write_card(card: CardLayout, data: dict[str, Any]) -> tuple[Path, Path]:
    """``report_card.json`` (the data), ``report_card.md`` and ``report_card.html`` (the same tables)."""
    import jinja2

    from presrm.report import TEMPLATES

    write_json(card.card_json, data)
    tables = sections(data)
    for path, autoescape in ((card.card_md, False), (card.card_html, True)):
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                                 undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        write_text_atomic(path, env.get_template(f"card{path.suffix}.j2").render(d=data, sections=tables))
    return card.card_md, card.card_html


def _mins(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"
