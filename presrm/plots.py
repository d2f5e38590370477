"""The report's iteration dashboard: figures computed from a collected run, drawn as inline SVG.

``dashboard(data)`` turns what ``presrm.report.collect`` gathered into small,
JSON-friendly series (they go into ``report.json``); ``render(dash)`` draws
them with matplotlib's object API (no pyplot, no global backend state; SVG
needs no display) and returns one SVG string per figure.

Models are labelled as in the paper: ``M0`` is the base model, ``M1`` the
model after IFT/EFT when the run has that stage (``data["model_shift"]`` is 1
then, else 0), and iteration k trains M_{k+shift} into M_{k+shift+1}. The x
position is ``model_index``: k for the model that judges iteration k, so
search and evaluation figures of one judge share a position.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from presrm.evaluate import wilson_interval
from presrm.verify import NUMBER

BINS = 10  # score histogram bins over [0, 1]
GREEN, RED, BLUE, GREY, ORANGE = "#2e7d32", "#c62828", "#1565c0", "#9e9e9e", "#ef6c00"


def _rate(k: float, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(round(k), n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def candidate_score(cand: dict[str, Any], n_cands: int) -> float | None:
    """A candidate's judge score in [0, 1]: its pointwise score, else its share of pairwise wins."""
    if cand.get("score") is not None:
        return float(cand["score"])
    if cand.get("wins") is not None and n_cands > 1:
        return float(cand["wins"]) / (n_cands - 1)
    return None


def _rank_key(cand: dict[str, Any]) -> float | None:
    """What the search ranked candidates by: wins when the judge was pairwise, else the score."""
    if cand.get("wins") is not None:
        return float(cand["wins"])
    return None if cand.get("score") is None else float(cand["score"])


def pointwise_disagrees(score: float | None, verdict: str | None) -> bool:
    """True when the verifier decided a step and the judge score sits on the other side of 0.5."""
    if score is None or verdict not in ("correct", "incorrect"):
        return False
    return (score >= 0.5) != (verdict == "correct")


def ranking_couples(cands: Sequence[dict[str, Any]]) -> tuple[float, int]:
    """At one step: (agreeing, total) couples of a verifiably right and a verifiably wrong candidate.

    A couple agrees when the judge ranks the right one higher (a tie counts half),
    the same definition as ``presrm.search.search_stats``' within-step agreement.
    """
    right = [_rank_key(c) for c in cands if c.get("verdict") == "correct"]
    wrong = [_rank_key(c) for c in cands if c.get("verdict") == "incorrect"]
    agree, total = 0.0, 0
    for r in right:
        for w in wrong:
            if r is None or w is None:
                continue
            total += 1
            agree += 1.0 if r > w else 0.5 if r == w else 0.0
    return agree, total


def _hist(scores: Iterable[float]) -> list[int]:
    counts = [0] * BINS
    for s in scores:
        counts[min(BINS - 1, max(0, int(s * BINS)))] += 1
    return counts


def _mean_ci(values: Sequence[int]) -> dict[str, Any]:
    n = len(values)
    if not n:
        return {"n": 0, "mean": None, "ci95": [None, None], "counts": {}}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95": [mean - half, mean + half],
            "counts": {str(k): v for k, v in sorted(Counter(values).items())}}


class _Judged:
    """Accumulates the judged steps of one judge model, per source (eval steps, search candidates)."""

    def __init__(self) -> None:
        self.scores: dict[str, dict[str, list[float]]] = {}  # source -> verdict -> scores
        self.kind: dict[str, str] = {}  # source -> "probability" or "win rate"
        self.unverifiable = 0
        self.pointwise = {"search": [0, 0], "eval": [0, 0]}  # agree, decided
        self.couples = [0.0, 0]

    def add(self, score: float | None, verdict: str | None, source: str, *, probability: bool = True) -> None:
        """One judged step; only a probability (not a win rate) counts for pointwise agreement."""
        if score is None:
            return
        if verdict not in ("correct", "incorrect"):
            self.unverifiable += 1
            return
        by = self.scores.setdefault(source, {"correct": [], "incorrect": []})
        by[verdict].append(score)
        kind = "probability" if probability else "win rate"
        self.kind[source] = kind if self.kind.get(source, kind) == kind else "mixed"
        if probability:
            self.pointwise[source][0] += not pointwise_disagrees(score, verdict)
            self.pointwise[source][1] += 1

    def summary(self) -> dict[str, Any]:
        agreement = {f"{src}_pointwise": _rate(a, n) for src, (a, n) in self.pointwise.items() if n}
        if self.couples[1]:
            agreement["search_within_step"] = _rate(self.couples[0], self.couples[1])
        hists = [{"source": src, "kind": self.kind[src], "hist": {v: _hist(x) for v, x in by.items()},
                  "n": {v: len(x) for v, x in by.items()}} for src, by in sorted(self.scores.items())]
        return {"hists": hists, "unverifiable": self.unverifiable, "agreement": agreement}


def _win_rate_entry(entry: dict[str, Any]) -> bool:
    """True when the entry's ``score`` is a share of pairwise wins, not a probability."""
    return entry.get("score_kind") == "win_rate"


_REASON_NUMBER = re.compile(rf"-?{NUMBER}(?:e[-+]?[0-9]+)?")


def _reason_key(reason: str) -> str:
    """Group no-pair reasons that differ only in their numbers ('score margin 0.0012 <= min_margin')."""
    return " ".join(_REASON_NUMBER.sub(" ", reason).split())


def is_rollback(entry: dict[str, Any]) -> bool:
    return bool(entry.get("rollback") or entry.get("rolled_back") or entry.get("action") == "rollback")


def dashboard(data: dict[str, Any]) -> dict[str, Any]:
    """Per-model and per-iteration series for the dashboard (all plain JSON)."""
    judged: dict[int, _Judged] = {}
    labels: dict[int, str] = {}
    accuracy, steps = [], []
    for ev in data["evals"]:
        m = ev["model_index"]
        labels[m] = ev["label"]
        s = ev["summary"]
        accuracy.append({"label": ev["label"], "model_index": m, "n": s.get("n"),
                         **{kind: s[kind] for kind in ("strict", "flexible") if kind in s}})
        steps.append({"label": ev["label"], "model_index": m, "source": "eval",
                      **_mean_ci([len(r.get("steps") or []) for r in ev["samples"]])})
        j = judged.setdefault(m, _Judged())
        for r in ev["samples"]:
            checks = r.get("step_checks") or []
            for i, score in enumerate(r.get("step_scores") or []):
                j.add(score, checks[i].get("verdict") if i < len(checks) else None, "eval")
    pairs = []
    for it in data["iterations"]:
        m = it["iteration"]
        labels.setdefault(m, f"M{m + data.get('model_shift', 0)}")
        j = judged.setdefault(m, _Judged())
        kept, rollbacks, dropped = 0, 0, Counter()
        for rec in it["search"]:
            for entry in rec.get("search") or []:
                cands = entry.get("candidates") or []
                probability = not _win_rate_entry(entry)
                for c in cands:
                    j.add(candidate_score(c, len(cands)), c.get("verdict"), "search",
                          probability=probability and c.get("score") is not None)
                a, n = ranking_couples(cands)
                j.couples[0] += a
                j.couples[1] += n
                if is_rollback(entry):
                    rollbacks += 1
                elif entry.get("pair"):
                    kept += 1
                elif entry.get("dropped"):
                    dropped[_reason_key(str(entry["dropped"]))] += 1
        if it["search"]:
            steps.append({"label": labels[m], "model_index": m, "source": "search",
                          **_mean_ci([len(r.get("steps") or []) for r in it["search"]])})
        pairs.append({"iteration": m, "pairs": it["pairs"] if it["pairs"] is not None else kept,
                      "steps_with_pair": kept, "rollbacks": rollbacks, "dropped": dict(dropped.most_common())})
    judges = [{"label": labels[m], "model_index": m, **judged[m].summary()} for m in sorted(judged)]
    return {"accuracy": accuracy, "judges": judges, "steps": steps, "pairs": pairs, "bins": BINS}


# ---------------------------------------------------------------- drawing


def _figure(w: float = 5.6, h: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    return fig


def _style(ax, title: str, ylabel: str = "") -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _svg(fig) -> str:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "presrm"  # stable clip-path ids: the same data gives the same SVG
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")  # legends outside stay in
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def _errorbars(ax, xs, rows, key: str, *, colour: str, label: str, dx: float = 0.0, scale: float = 100) -> None:
    pts = [(x + dx, r[key]) for x, r in zip(xs, rows, strict=True) if r.get(key) and r[key].get("ci95")]
    if not pts:
        return
    val = "accuracy" if "accuracy" in pts[0][1] else "rate" if "rate" in pts[0][1] else "mean"
    y = [scale * p[1][val] for p in pts]
    lo = [max(0.0, scale * (p[1][val] - p[1]["ci95"][0])) for p in pts]
    hi = [max(0.0, scale * (p[1]["ci95"][1] - p[1][val])) for p in pts]
    ax.errorbar([p[0] for p in pts], y, yerr=[lo, hi], fmt="o-", color=colour, label=label, capsize=3,
                markersize=4, linewidth=1.2)


def plot_accuracy(dash: dict[str, Any]) -> str | None:
    rows = dash["accuracy"]
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    _errorbars(ax, xs, rows, "strict", colour=BLUE, label="strict", dx=-0.06)
    _errorbars(ax, xs, rows, "flexible", colour=ORANGE, label="flexible", dx=0.06)
    ax.set_xticks(xs, [f"{r['label']}\nn={r['n']}" for r in rows])
    ax.set_ylim(bottom=0)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    _style(ax, "Accuracy per model (95% Wilson interval)", "accuracy (%)")
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


def plot_agreement(dash: dict[str, Any]) -> str | None:
    rows = [j for j in dash["judges"] if j["agreement"]]
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    ag = [r["agreement"] for r in rows]
    for key, colour, label, dx in (("eval_pointwise", BLUE, "eval steps: score vs verdict", -0.08),
                                   ("search_pointwise", ORANGE, "search candidates: score vs verdict", 0.0),
                                   ("search_within_step", GREEN, "search: right ranked above wrong", 0.08)):
        _errorbars(ax, xs, ag, key, colour=colour, label=label, dx=dx)
    ax.axhline(50, color=GREY, linestyle="--", linewidth=0.8)
    ax.set_xticks(xs, [r["label"] for r in rows])
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylim(0, 100)
    _style(ax, "Judge-verifier agreement (by judge model)", "agreement (%)")
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    return _svg(fig)


def plot_histograms(dash: dict[str, Any]) -> str | None:
    panels = [(j["label"], h) for j in dash["judges"] for h in j["hists"] if sum(h["n"].values())]
    if not panels:
        return None
    panels = panels if len(panels) <= 8 else [*panels[:4], *panels[-4:]]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(3.2 * cols + 0.6, 2.9 * rows)
    width = 1.0 / dash["bins"]
    for i, (label, h) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for side, (verdict, colour) in enumerate((("correct", GREEN), ("incorrect", RED))):
            n = h["n"][verdict]
            if n:  # side by side within each bin: share of that verdict's steps
                ax.bar([(b + 0.5 * side) * width for b in range(dash["bins"])], [c / n for c in h["hist"][verdict]],
                       width=width / 2, align="edge", color=colour, alpha=0.8, label=f"verifier: {verdict} (n={n})")
        ax.set_xlim(0, 1)
        what = "eval steps" if h["source"] == "eval" else "search candidates"
        _style(ax, f"{label}: {what}", "share of steps" if i % cols == 0 else "")
        ax.set_xlabel("judge P(correct)" if h["kind"] == "probability" else f"judge {h['kind']}", fontsize=8)
        ax.legend(fontsize=7, loc="upper center", framealpha=0.85, edgecolor="none")
    return _svg(fig)


def plot_steps(dash: dict[str, Any]) -> str | None:
    rows = [r for r in dash["steps"] if r["n"]]  # an evaluation of no problems has no steps to draw
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    models = sorted({r["model_index"] for r in rows})
    names = {r["model_index"]: r["label"] for r in rows}
    if len(models) == 1:
        return _steps_histogram(ax, fig, rows)
    for source, colour, label, dx in (("eval", BLUE, "evaluation (greedy)", -0.06),
                                      ("search", ORANGE, "step search (chosen path)", 0.06)):
        by_m = {r["model_index"]: r for r in rows if r["source"] == source and r["n"]}
        xs = [i for i, m in enumerate(models) if m in by_m]
        _errorbars(ax, xs, [{"v": by_m[models[i]]} for i in xs], "v", colour=colour, label=label, dx=dx, scale=1)
    ax.set_xticks(range(len(models)), [names[m] for m in models])
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_ylim(bottom=0)
    _style(ax, "Steps per solution (mean, 95% CI)", "steps")
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    return _svg(fig)


def _steps_histogram(ax, fig, rows: list[dict[str, Any]]) -> str:
    """One model only: the distribution of steps per solution instead of a single mean."""
    for side, r in enumerate(rows):
        counts = {int(k): v for k, v in r["counts"].items()}
        colour = BLUE if r["source"] == "eval" else ORANGE
        label = f"{'evaluation' if r['source'] == 'eval' else 'step search'} (mean {r['mean']:.2f}, n={r['n']})"
        ax.bar([k - 0.2 + 0.4 * side for k in counts], list(counts.values()), width=0.4, color=colour, label=label)
    ax.set_xlabel("steps in the solution", fontsize=8)
    _style(ax, f"Steps per solution ({rows[0]['label']})", "solutions")
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


def plot_pairs(dash: dict[str, Any]) -> str | None:
    rows = dash["pairs"]
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xs = [r["iteration"] for r in rows]
    bottom = [r["steps_with_pair"] for r in rows]
    ax.bar(xs, bottom, color=GREEN, label="pair kept" if any(bottom) else None, width=0.6)
    reasons = Counter()
    for r in rows:
        reasons.update(r["dropped"])
    palette = ["#90a4ae", "#ffb74d", "#e57373", "#ba68c8", "#4db6ac", "#a1887f"]
    for i, (reason, _) in enumerate(reasons.most_common(len(palette))):
        vals = [r["dropped"].get(reason, 0) for r in rows]
        ax.bar(xs, vals, bottom=bottom, color=palette[i], label=textwrap.fill(f"no pair: {reason}", 34), width=0.6)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    if any(r["rollbacks"] for r in rows):
        ax.bar(xs, [r["rollbacks"] for r in rows], bottom=bottom, color="#455a64", label="rollback", width=0.6)
    ax.set_xticks(xs, [f"iter {x}" for x in xs])
    _style(ax, "Search steps per iteration: pairs and drops", "steps")
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    if ax.get_legend_handles_labels()[0]:  # nothing labelled (grpo's rollouts make no pairs): no empty legend
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig)


def render(dash: dict[str, Any]) -> list[dict[str, str]]:
    """Draw every figure that has data: ``[{"name", "title", "svg"}]`` in display order."""
    out = []
    for name, title, fn in (("accuracy", "Accuracy", plot_accuracy),
                            ("agreement", "Judge-verifier agreement", plot_agreement),
                            ("steps", "Steps per solution", plot_steps),
                            ("pairs", "Pairs per iteration", plot_pairs),
                            ("histograms", "Score histograms", plot_histograms)):
        svg = fn(dash)
        if svg is not None:
            out.append({"name": name, "title": title, "svg": svg})
    return out
