"""Does report.html stay usable at GSM8K scale? Writes the "report" section of docs/BENCHMARKS.md.

Builds a synthetic run directory the size of a real GSM8K run (M0, M1, M2
each evaluated on all 1,319 test problems with 6 steps per solution; two
iterations of step search on 400 problems, K=6 candidates, 8 steps each),
writes its report, and loads it in headless Chromium. Figures: time to write
the report, HTML and JSON sizes, problems rendered into the HTML, and the time
for Chromium to load the page, run its pagination script and paint (the
wall time of a headless screenshot, next to that of a one-line page).

Run: ``python benchmarks/bench_report.py [--problems 1319] [--searched 400] [--no-write]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402 - after the path set-up

from presrm.report import write_report  # noqa: E402
from tests.report_fixtures import make_run_dir, search_records  # noqa: E402

STEPS = 6


def _pad_solutions(path: Path) -> None:
    """Give every evaluated solution STEPS steps (the fixture writes 3), like real GSM8K output."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        while len(r["steps"]) < STEPS:
            i = len(r["steps"])
            text = f"Step {i + 1}: Then {i} * 3 = {3 * i} more, so we keep going with the plan."
            r["steps"].append({"index": i, "text": text, "start": 0, "end": len(text)})
            r["step_scores"].append(round((i * 0.37) % 1, 3))
            r["step_checks"].append({"verdict": "correct", "claims": [], "reason": "1 claim(s) hold"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build(root: Path, problems: int, searched: int) -> Path:
    make_run_dir(root, problems=problems, searched=1, iterations=2)
    for f in root.glob("iter_*/*samples.jsonl"):
        if f.name != "samples.jsonl":
            _pad_solutions(f)
    for it in (0, 1):
        recs = search_records(searched, seed=it, pairwise=it == 1, k=6, steps_per=8)
        (root / f"iter_{it}" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def _chromium(html: Path, *args: str) -> tuple[float, str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        t0 = time.time()
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", *args, html.as_uri()],
                           capture_output=True, text=True, timeout=600, check=False)
        return time.time() - t0, r.stdout


def browser_load(html: Path) -> tuple[float, float, str]:
    """(seconds to open and paint a screenshot, the same for a tiny page, page counters after the script ran)."""
    with tempfile.TemporaryDirectory() as tmp:
        load, _ = _chromium(html, f"--screenshot={tmp}/a.png", "--window-size=1400,2000")
        tiny = Path(tmp) / "tiny.html"
        tiny.write_text("<!doctype html><title>t</title><p>start-up only</p>")
        base, _ = _chromium(tiny, f"--screenshot={tmp}/b.png", "--window-size=1400,2000")
    _, dom = _chromium(html, "--dump-dom")
    return load, base, "; ".join(re.findall(r'<span class="count"[^>]*>([^<]*)<', dom))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--searched", type=int, default=400)
    ap.add_argument("--no-write", action="store_true", help="print the figures, leave docs/BENCHMARKS.md alone")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp) / "run", args.problems, args.searched)
        t0 = time.time()
        html = write_report(root)
        write_s = time.time() - t0
        html_mb = html.stat().st_size / 1e6
        json_mb = (root / "report.json").stat().st_size / 1e6
        n_rendered = html.read_text().count('class="prob"')
        load_s, base_s, counts = browser_load(html)
    body = (
        "## report (`presrm.report`)\n\n"
        f"A synthetic run the size of a real GSM8K run: M0, M1 and M2 each evaluated on {args.problems} problems "
        f"({STEPS} steps per solution), and two iterations of step search on {args.searched} problems "
        "(K=6 candidates, 8 steps each; one pointwise, one pairwise with all matches recorded).\n\n"
        "| figure | value |\n|---|---|\n"
        f"| write report.json + report.html | {write_s:.1f} s |\n"
        f"| report.html | {html_mb:.1f} MB, {n_rendered} problems rendered |\n"
        f"| report.json | {json_mb:.1f} MB |\n"
        f"| headless Chromium: start, load, run the script, paint a 1400x2000 screenshot | {load_s:.1f} s "
        f"(a one-line page: {base_s:.1f} s) |\n"
        f"| page counters after the script ran | {counts} |\n\n"
        "Every list shows 25 problems per page (filters: wrong answers, judge-verifier disagreements, text). "
        "Each problem is rendered once to HTML and kept as a string in a JSON block, which the browser reads as "
        "text; only the page on screen becomes elements. The page holds up to 2,000 evaluated and 400 searched "
        "problems per list (the first 50 also as plain HTML for readers without JavaScript); report.json holds "
        "everything.\n"
        "The machine was shared with other jobs while this ran; times are upper bounds.\n"
    )
    print(body)
    if not args.no_write:
        write_section("report", body)


if __name__ == "__main__":
    main()
