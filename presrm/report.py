"""A self-contained HTML report (and report.json with the same data) for a run or an eval directory.

The HTML is rendered from the JSON by one Jinja template; it needs no network.
Steps are coloured by their judge score (red = low, green = high) and steps
whose arithmetic the verifier found wrong are outlined.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2

from presrm.errors import DataError
from presrm.jsonio import read_json, read_jsonl, write_json

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_PROBLEMS = 500  # per section; the JSON keeps everything


def _eval_section(title: str, summary_file: Path, samples_file: Path) -> dict[str, Any] | None:
    if not summary_file.exists() or not samples_file.exists():
        return None
    return {"title": title, "summary": read_json(summary_file), "samples": read_jsonl(samples_file)}


def collect(run_dir: Path) -> dict[str, Any]:
    """Gather everything the report shows from a run directory or an eval output directory."""
    data: dict[str, Any] = {"run_dir": str(run_dir), "config": None, "evals": [], "iterations": []}
    if (run_dir / "config.yaml").exists():
        import yaml

        data["config"] = yaml.safe_load((run_dir / "config.yaml").read_text())
    single = _eval_section("Evaluation", run_dir / "results.json", run_dir / "samples.jsonl")
    if single:
        data["evals"].append(single)
    before = _eval_section("M0 (before training)", run_dir / "iter_0" / "eval_before.json",
                           run_dir / "iter_0" / "eval_before_samples.jsonl")
    if before:
        data["evals"].append(before)
    for it_dir in sorted(run_dir.glob("iter_*"), key=lambda p: int(p.name.split("_")[1])):
        k = int(it_dir.name.split("_")[1])
        it: dict[str, Any] = {"iteration": k, "search": [], "pairs": 0, "train": None, "stats": None}
        if (it_dir / "search.json").exists():
            it["stats"] = read_json(it_dir / "search.json")
        if (it_dir / "samples.jsonl").exists():
            it["search"] = read_jsonl(it_dir / "samples.jsonl")
        if (it_dir / "pairs.jsonl").exists():
            it["pairs"] = len(read_jsonl(it_dir / "pairs.jsonl"))
        if (it_dir / "train.json").exists():
            it["train"] = {k2: v for k2, v in read_json(it_dir / "train.json").items() if k2 != "log_history"}
        data["iterations"].append(it)
        after = _eval_section(f"M{k + 1} (after iteration {k})", it_dir / "eval.json",
                              it_dir / "eval_samples.jsonl")
        if after:
            data["evals"].append(after)
    if not data["evals"] and not data["iterations"]:
        raise DataError(f"{run_dir}: not a presrm run or eval directory (no results.json, config.yaml or iter_*/)")
    return data


def _score_colour(score: float | None) -> str:
    if score is None:
        return "#eee"
    hue = int(120 * max(0.0, min(1.0, score)))  # 0 = red, 120 = green
    return f"hsl({hue}, 70%, 85%)"


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.json`` and ``report.html`` into ``run_dir``; return the HTML path."""
    root = Path(run_dir)
    data = collect(root)
    write_json(root / "report.json", data)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["colour"] = _score_colour
    html = env.get_template("report.html.j2").render(data=data, max_problems=MAX_PROBLEMS)
    out = root / "report.html"
    out.write_text(html, encoding="utf-8")
    return out
