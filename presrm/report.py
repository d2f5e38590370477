"""A self-contained HTML report (and report.json with the same data) for a run or an eval directory.

``collect`` reads a train run directory (``config.yaml``, ``iter_k/``) or a
``presrm eval`` output directory (``results.json`` + ``samples.jsonl``) into
one dict; ``write_report`` writes it as ``report.json`` and renders
``report.html`` from it with one Jinja template. The HTML needs no network:
CSS and JavaScript are inline and the dashboard figures are inline SVG drawn
by ``presrm.plots``. Model and dataset text is escaped everywhere.

Per problem, steps are coloured by judge score (red = low, green = high),
verifier verdicts are marked, and wrong arithmetic is highlighted with the
claim and the exact value on hover. Every list is paginated and filtered by
inline JavaScript; with JavaScript off the first ``caps`` problems of each
list are all shown (``report.json`` always holds everything).

>>> write_report("runs/quickstart")  # doctest: +SKIP
PosixPath('runs/quickstart/report.html')
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from presrm import plots
from presrm.errors import DataError
from presrm.evaluate import degeneration
from presrm.grading import judge_agreement
from presrm.jsonio import read_json, read_jsonl, read_yaml, write_text_atomic
from presrm.layout import EvalLayout, RunLayout, StageDir

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Problems rendered into the HTML per list (the JSON keeps everything). A search record with K
# candidates per step is ~10x the HTML of an eval record, hence the smaller cap.
CAPS = {"eval": 2000, "search": 400, "nojs": 50}
_EVAL_KEYS = {"id", "question", "gold", "completion", "steps", "pred_strict", "pred_flexible", "correct_strict",
              "correct_flexible", "step_scores", "step_checks", "target", "candidates", "chosen", "votes",
              "process_reward", "search", "steps_wrong", "steps_verifiable", "steps_timed_out"}
_SEARCH_KEYS = {"id", "question", "gold", "steps", "step_scores", "process_reward", "finished", "pred", "correct",
                "search", "end", "rounds", "rollbacks"}
_ENTRY_KEYS = {"step", "round", "candidates", "chosen", "rejected", "pair", "dropped", "matches", "rollback",
               "rolled_back", "action", "reason", "popped", "flag", "score_kind"}
_CAND_KEYS = {"text", "score", "wins", "verdict", "check", "claims"}


STEP_SCORE_LABELS = {"pointwise": "P(step is correct), pointwise judge",
                     "likelihood": "probability of its least likely result, likelihood judge",
                     "random": "random score (a control: seeded hash, no judge)"}
"""What an evaluation's per-step score is, by the judge mode that wrote it."""


def step_judge_label(summary: dict[str, Any]) -> str | None:
    """The judge behind an evaluation's per-step scores, in words (None when no judge scored them).

    >>> step_judge_label({"protocol": {"judge": {"mode": "pointwise"}, "judge_steps_mode": "random"}})
    'random score (a control: seeded hash, no judge)'
    """
    protocol = summary.get("protocol") or {}
    mode = protocol.get("judge_steps_mode") or (protocol.get("judge") or {}).get("mode")
    return None if mode is None else STEP_SCORE_LABELS.get(mode, f"{mode} judge score")


def _eval_section(title: str, label: str, model_index: int,
                  files: tuple[Path, Path]) -> dict[str, Any] | None:
    summary_file, samples_file = files
    if not summary_file.exists() or not samples_file.exists():
        return None
    summary, samples = read_json(summary_file), read_jsonl(samples_file)
    if "repeats" not in summary:  # written before the degeneration counts: they come from the samples alone
        summary.update(degeneration(samples))
    if "judge_agreement" not in summary:  # likewise, before the judge's agreement was measured in the summary
        summary["judge_agreement"] = judge_agreement(samples)
    return {"title": title, "label": label, "model_index": model_index, "summary": summary,
            "samples": samples, "files": [summary_file.name, samples_file.name],
            "judge_quality": None, "step_judge": step_judge_label(summary)}


def _judge_quality(folder: EvalLayout) -> dict[str, Any] | None:
    """A model's figures as a judge (``judge_eval*/results.json``): the synthetic and the natural set."""
    if not folder.results.exists():
        return None
    r = read_json(folder.results)
    nat = r.get("natural") or {}
    return {"mode": (r.get("protocol") or {}).get("mode"), "synthetic_auroc": (r.get("step_auroc") or {}).get("value"),
            "synthetic_pairwise": (r.get("pairwise") or {}).get("accuracy"),
            "processbench_f1": (r.get("processbench") or {}).get("f1"),
            "natural_auroc": (nat.get("step_auroc") or {}).get("value"),
            "natural_auroc_ci": (nat.get("step_auroc") or {}).get("ci95"),
            "natural_pairwise": (nat.get("pairwise") or {}).get("accuracy"),
            "natural_pairwise_ci": (nat.get("pairwise") or {}).get("ci95"),
            "natural_n": [(nat.get("step_auroc") or {}).get("n_correct"),
                          (nat.get("step_auroc") or {}).get("n_incorrect"),
                          (nat.get("pairwise") or {}).get("n")] if nat else None}


def _count_lines(path: Path) -> int | None:
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _train_metrics(d: StageDir) -> dict[str, Any] | None:
    if not d.train.exists():
        return None
    return {k: v for k, v in read_json(d.train).items() if k != "log_history"}


def _init_section(d: StageDir) -> dict[str, Any] | None:
    """The IFT/EFT initialisation: example counts and the SFT metrics."""
    if not d.path.is_dir():
        return None
    out = {"ift_examples": _count_lines(d.ift), "eft_examples": _count_lines(d.eft), "train": _train_metrics(d)}
    if d.given.exists():  # init.model: M1 was given (which folder), not trained here
        out["given"] = read_json(d.given)
    return out


def collect(run_dir: str | Path) -> dict[str, Any]:
    """Gather everything the report shows from a run directory or an eval output directory."""
    root = Path(run_dir)
    run, folder = RunLayout(root), EvalLayout(root)  # a train run directory or an evaluation folder
    data: dict[str, Any] = {"run_dir": str(root), "kind": None, "config": None, "evals": [], "init": None,
                            "iterations": []}
    if run.config.exists():
        data["config"] = read_yaml(run.config)
    single = _eval_section("Evaluation", "eval", 0, (folder.results, folder.samples))
    if single:
        single["label"] = Path(str(single["summary"].get("model") or "eval")).name or "eval"
        data["evals"].append(single)
    # The paper's names: M0 is the base model, M1 the model after IFT/EFT (when the run has that stage),
    # and iteration k trains M_{k+shift} into M_{k+shift+1}. ``model_index`` stays k for the model that
    # judges iteration k (the base model gets -1 when an initialisation comes first): it is the key that
    # links a model's evaluation to the search it judged, and the x position in the dashboard.
    data["init"] = _init_section(run.init)
    given = (data["init"] or {}).get("given")
    init = _eval_section(f"M1 (given: {given['model']})" if given else "M1 (after IFT/EFT initialisation)", "M1", 0,
                         run.init.eval_files("eval"))
    shift = data["model_shift"] = 1 if data["init"] else 0
    before = _eval_section("M0 (base model, before training)", "M0", -shift, run.iteration(0).eval_files("eval_before"))
    for ev, stage, name in ((before, run.iteration(0), "judge_eval_before"), (init, run.init, "judge_eval")):
        if ev:
            ev["judge_quality"] = _judge_quality(stage.judge_eval(name))
    data["evals"] += [ev for ev in (before, init) if ev]
    for k in run.iterations():
        d = run.iteration(k)
        it: dict[str, Any] = {"iteration": k, "search": [], "pairs": None, "train": _train_metrics(d),
                              "stats": read_json(d.search) if d.search.exists() else None,
                              "guard": read_json(d.guard) if d.guard.exists() else None}
        if d.samples.exists():
            it["search"] = read_jsonl(d.samples)
        if d.pairs.exists():
            it["pairs"] = len(read_jsonl(d.pairs))
        data["iterations"].append(it)
        after = _eval_section(f"M{k + 1 + shift} (after iteration {k})", f"M{k + 1 + shift}", k + 1,
                              d.eval_files("eval"))
        if after:
            after["judge_quality"] = _judge_quality(d.judge_eval("judge_eval"))
            data["evals"].append(after)
    if not data["evals"] and not data["iterations"] and data["config"] is None:
        raise DataError(f"{root}: not a presrm run or eval directory (no results.json, config.yaml or iter_*/)")
    data["kind"] = "train" if data["iterations"] or data["config"] else "eval"
    data["dashboard"] = plots.dashboard(data)
    return data


# ---------------------------------------------------------------- views (what the template shows)


def _score_colour(score: float | None) -> str:
    if score is None:
        return "#eee"
    hue = int(120 * max(0.0, min(1.0, score)))  # 0 = red, 120 = green
    return f"hsl({hue}, 70%, 85%)"


def _claim_title(c: dict[str, Any]) -> str:
    value = f"; computed {c['value']}" if c.get("value") is not None else ""
    return f"{c.get('text', '')}: {c.get('reason', '')}{value}"


def mark_claims(text: str, claims: list[dict[str, Any]]) -> Markup:
    """Escape ``text`` and wrap each arithmetic claim found in it: wrong ones in <mark>, right ones underlined.

    >>> str(mark_claims("3 + 4 = 8 <b>", [{"text": "3 + 4 = 8", "ok": False, "value": "7", "reason": "x"}]))
    '<mark class="wrong" title="3 + 4 = 8: x; computed 7">3 + 4 = 8</mark> &lt;b&gt;'
    """
    out, pos = [], 0
    for c in claims:
        needle = c.get("text") or ""
        at = text.find(needle, pos) if needle else -1
        if at < 0:
            continue
        cls = "wrong" if c.get("ok") is False else "claim"
        tag = "mark" if cls == "wrong" else "span"
        out += [escape(text[pos:at]), Markup('<{} class="{}" title="{}">').format(Markup(tag), cls, _claim_title(c)),
                escape(needle), Markup(f"</{tag}>")]
        pos = at + len(needle)
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def _claims_for(text: str, verdict: str | None, recorded: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The recorded claims, or (for a verifiably wrong step recorded without them) the verifier's again."""
    if recorded:
        return recorded
    if verdict != "incorrect":
        return []
    from presrm.verify import check_step

    return [c.to_dict() for c in check_step(text).claims]


def _step_view(text: str, score: float | None, check: dict[str, Any] | None) -> dict[str, Any]:
    check = check or {}
    verdict = check.get("verdict")
    claims = _claims_for(text, verdict, check.get("claims"))
    return {"text": text, "html": mark_claims(text, claims), "score": score, "colour": _score_colour(score),
            "verdict": verdict, "reason": check.get("reason"), "claims": claims,
            "disagree": plots.pointwise_disagrees(score, verdict)}


def _extra(rec: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in known}


def eval_view(rec: dict[str, Any], index: int) -> dict[str, Any]:
    """One evaluated problem as the template shows it."""
    checks = rec.get("step_checks") or []
    scores = rec.get("step_scores") or []
    steps = [_step_view(s.get("text", "") if isinstance(s, dict) else str(s), scores[i] if i < len(scores) else None,
                        checks[i] if i < len(checks) else None) for i, s in enumerate(rec.get("steps") or [])]
    return {"index": index, "id": rec.get("id"), "question": rec.get("question"), "gold": rec.get("gold"),
            "pred_strict": rec.get("pred_strict"), "pred_flexible": rec.get("pred_flexible"),
            "ok_strict": bool(rec.get("correct_strict")), "ok_flexible": bool(rec.get("correct_flexible")),
            "steps": steps, "completion": rec.get("completion"),
            "min_score": min(scores) if scores else None,
            "wrong_steps": sum(s["verdict"] == "incorrect" for s in steps),
            "disagree": any(s["disagree"] for s in steps), "extra": _extra(rec, _EVAL_KEYS),
            "target": rec.get("target") if rec.get("target") not in (None, "", rec.get("gold")) else None,
            "process_reward": rec.get("process_reward"), "votes": rec.get("votes") or {},
            "candidates": _decoding_candidates(rec), "beam": _beam_rounds(rec.get("search") or [])}


def _decoding_candidates(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """maj@k / best-of-N / beam: every sampled or ended candidate, the one shown marked."""
    out = []
    for i, c in enumerate(rec.get("candidates") or []):
        if not isinstance(c, dict):
            continue
        out.append({"n": i + 1, "shown": i == rec.get("chosen"), "pred_strict": c.get("pred_strict"),
                    "pred_flexible": c.get("pred_flexible"), "ok_strict": bool(c.get("correct_strict")),
                    "ok_flexible": bool(c.get("correct_flexible")), "process_reward": c.get("process_reward"),
                    "colour": _score_colour(c.get("process_reward")), "completion": c.get("completion"),
                    "final": c.get("final")})
    return out


def _beam_rounds(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judge-guided beam search: per round, each beam's candidate next steps and which were kept."""
    out = []
    for r in rounds:
        cands = [{"beam": c.get("beam"), "kept": bool(c.get("kept")), "reward": c.get("process_reward"),
                  **_step_view(str(c.get("text", "")), c.get("score"), None)}
                 for c in r.get("candidates") or [] if isinstance(c, dict)]
        out.append({"step": r.get("step"), "candidates": cands})
    return out


def _decision(entry: dict[str, Any], cands: list[dict[str, Any]]) -> tuple[str, str]:
    """(kind, text): what the search did at this step."""
    if plots.is_rollback(entry):
        why = entry.get("reason") or entry.get("dropped") or "rolled back"
        popped = entry.get("popped")
        return "rollback", f"rollback: {why}" + (f"; removed {popped!r}" if popped else "")
    if entry.get("pair"):
        flag = f" (flagged: {entry['flag']})" if entry.get("flag") else ""
        return "pair", (f"pair kept: #{entry.get('chosen', 0) + 1} chosen, #{entry.get('rejected', 0) + 1} "
                        f"rejected{flag}")
    if entry.get("dropped"):
        return "drop", f"no pair: {entry['dropped']}"
    return "drop" if cands else "none", "no pair"


def _entry_view(entry: dict[str, Any]) -> dict[str, Any]:
    cands = entry.get("candidates") or []
    chosen, rejected = entry.get("chosen"), entry.get("rejected")
    if plots.is_rollback(entry):
        chosen = rejected = None  # a rollback keeps no candidate
    probability = entry.get("score_kind") != "win_rate"
    views = []
    for i, c in enumerate(cands):
        text = str(c.get("text", ""))
        v = _step_view(text, plots.candidate_score(c, len(cands)),
                       c.get("check") or {"verdict": c.get("verdict"), "claims": c.get("claims")})
        v.update({"n": i + 1, "raw_score": c.get("score"), "wins": c.get("wins"), "extra": _extra(c, _CAND_KEYS),
                  "role": "chosen" if i == chosen else "rejected" if i == rejected else ""})
        v["disagree"] = v["disagree"] and probability and c.get("score") is not None  # a win rate is no probability
        views.append(v)
    kind, text = _decision(entry, cands)
    agree, couples = plots.ranking_couples(cands)
    return {"step": entry.get("step"), "kind": kind, "decision": text, "candidates": views,
            "has_wins": any(c.get("wins") is not None for c in cands),
            "has_scores": probability and any(c.get("score") is not None for c in cands),
            "round": entry.get("round"), "flag": entry.get("flag"),
            "matches": entry.get("matches") or [], "misranked": couples > 0 and agree < couples,
            "disagree": (couples > 0 and agree < couples) or any(v["disagree"] for v in views),
            "extra": _extra(entry, _ENTRY_KEYS)}


def search_view(rec: dict[str, Any], index: int) -> dict[str, Any]:
    """One step-search record (a problem's chosen path and every decision) as the template shows it."""
    entries = [_entry_view(e) for e in rec.get("search") or []]
    # A step of the final path is the chosen candidate of some entry (after rollbacks, not of the i-th one).
    chosen = {c["text"]: c for e in entries for c in e["candidates"] if c["role"] == "chosen"}
    scores = rec.get("step_scores") or []
    path = []
    for i, text in enumerate(rec.get("steps") or []):
        c = chosen.get(str(text))
        score = scores[i] if i < len(scores) else (c["score"] if c else None)
        path.append(_step_view(str(text), score, {"verdict": c["verdict"], "claims": c["claims"]} if c else None))
    return {"index": index, "id": rec.get("id"), "question": rec.get("question"), "gold": rec.get("gold"),
            "pred": rec.get("pred"), "correct": bool(rec.get("correct")), "finished": bool(rec.get("finished")),
            "process_reward": rec.get("process_reward"), "path": path, "entries": entries,
            "pairs": sum(e["kind"] == "pair" for e in entries), "end": rec.get("end"),
            "rollbacks": sum(e["kind"] == "rollback" for e in entries),
            "disagree": any(e["disagree"] for e in entries), "extra": _extra(rec, _SEARCH_KEYS)}


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict) and d:
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, d)]


def _run_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The summary table: what ran, with which settings and library versions."""
    cfg = data["config"] or {}
    rows: list[tuple[str, Any]] = [("run directory", data["run_dir"]), ("kind", data["kind"])]
    inner = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
    if data["kind"] == "eval" and data["evals"]:
        s = data["evals"][0]["summary"]
        rows += [(k, s[k]) for k in ("model", "adapter", "task", "n", "seconds") if k in s]
        protocol = s.get("protocol") or {}
        versions, git = s.get("versions") or {}, s.get("git")
    else:
        rows += [(k, inner.get(k)) for k in ("model", "iterations", "seed", "name") if k in inner]
        protocol, versions, git = {}, cfg.get("versions") or {}, cfg.get("git")
    rows.append(("git", git or "unknown"))
    return {"rows": rows, "config": _flatten(inner) if inner else [], "protocol": _flatten(protocol),
            "versions": sorted(versions.items())}


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def script_json(obj: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``</`` or ``<!--`` can end or confuse it.

    >>> str(script_json(["</script><!--"]))
    '["<\\\\/script>\\\\u003c!--"]'
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("</", "<\\/").replace("<!--", "\\u003c!--"))


def _items(views: list[dict[str, Any]], sec: str, macro, flags: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each problem rendered once, with the flags the page filters on."""
    return [{"id": f"{sec}-p{v['index']}", "html": str(macro(v, sec)),
             "f": {k: int(bool(v[k])) for k in flags}} for v in views]


def render(data: dict[str, Any], caps: dict[str, int] | None = None) -> str:
    """The report's HTML for collected ``data``."""
    caps = {**CAPS, **(caps or {})}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(colour=_score_colour, fmt=_fmt, script_json=script_json)
    problems = env.get_template("problems.html.j2").module
    evals = [{**ev, "problems": _items([{**eval_view(r, i), "judge_note": ev.get("step_judge") or "judge score"}
                                        for i, r in enumerate(ev["samples"][:caps["eval"]])],
                                    f"eval-{k}", problems.eval_problem, ("ok_strict", "ok_flexible", "disagree"))}
             for k, ev in enumerate(data["evals"])]
    iters = [{**it, "problems": _items([search_view(r, i) for i, r in enumerate(it["search"][:caps["search"]])],
                                    f"search-{it['iteration']}", problems.search_problem,
                                    ("correct", "pairs", "disagree"))}
             for it in data["iterations"]]
    return env.get_template("report.html.j2").render(
        data=data, evals=evals, iterations=iters, summary=_run_summary(data), figures=plots.render(data["dashboard"]),
        nojs=caps["nojs"], generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_report(run_dir: str | Path, *, caps: dict[str, int] | None = None) -> Path:
    """Write ``report.json`` and ``report.html`` into ``run_dir``; return the HTML path."""
    run = RunLayout(Path(run_dir))  # an evaluation folder keeps its report under the same names
    data = collect(run.root)
    # Compact: at GSM8K scale indenting doubles the time to write it; it is read by programs.
    write_text_atomic(run.report_json, json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))
    out = run.report_html
    write_text_atomic(out, render(data, caps))
    log.info("report: %s", out)
    return out
