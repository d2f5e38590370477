"""Does report.html stay usable at GSM8K scale? Writes the "report" section of docs/BENCHMARKS.md.

Builds a synthetic run directory the size of a real GSM8K run (M0, M1, M2
each evaluated on all 1,319 test problems with 6 steps per solution; two
iterations of step search on 400 problems, K=6 candidates, up to 8 rounds),
writes its report, and loads it in headless Chromium. Figures: time to write
the report, HTML and JSON sizes, problems rendered into the HTML, and the time
for Chromium to load the page, run its pagination script and paint (the
wall time of a headless screenshot, next to that of a one-line page).

Run: ``python benchmarks/bench_report.py [--problems 1319] [--searched 400] [--no-write]``.
"""

from __future__ import annotations

import argparse
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

from _report import publish  # noqa: E402 - after the path set-up

from presrm.report import write_report  # noqa: E402
from tests.report_fixtures import make_run_dir  # noqa: E402

STEPS, K, ROUNDS = 6, 6, 8


def build(root: Path, problems: int, searched: int) -> Path:
    """Three evaluations (M0, M1, M2) and two iterations of step search (pointwise, then pairwise)."""
    return make_run_dir(root, problems=problems, searched=searched, iterations=2, eval_steps=STEPS, k=K,
                        max_steps=ROUNDS)


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
        text = html.read_text()
        n_items = text.count('{"id":"')  # one per problem in the lists' JSON blocks
        n_plain = text.count('<details class="prob"')
        load_s, base_s, counts = browser_load(html)
    body = (
        "## report (`presrm.report`)\n\n"
        f"A synthetic run the size of a real GSM8K run: M0, M1 and M2 each evaluated on {args.problems} problems "
        f"({STEPS} steps per solution), and two iterations of step search on {args.searched} problems "
        f"(K={K} candidates, up to {ROUNDS} rounds each; one pointwise, one pairwise with all matches recorded), "
        "made by the real step search with a scripted sampler and a fake judge (tests/report_fixtures.py).\n\n"
        "| figure | value |\n|---|---|\n"
        f"| write report.json + report.html | {write_s:.1f} s |\n"
        f"| report.html | {html_mb:.1f} MB: {n_items} problems, {n_plain} of them also as plain HTML |\n"
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
    publish("report", body, write=not args.no_write)


if __name__ == "__main__":
    main()
