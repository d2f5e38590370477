"""Screenshots of a run's report.html in headless Chromium, for docs/report.md.

Takes three views: the top of the report (summary and dashboard), one
evaluation list (``#focus=eval-N``: heat strips per problem), and one problem
opened (``#focus=<problem id>``: a step-search record with a pair and a
verifiably wrong candidate when there is one, else an evaluated solution with
wrong arithmetic). PNGs are reduced to a palette so each stays under
``--max-kb``.

Run: ``python benchmarks/screenshot_report.py RUN_DIR [--out-dir docs/img] [--prefix report]``.
Needs Debian's ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from presrm.report import write_report  # noqa: E402 - after the path set-up


def chromium_screenshot(url: str, png: Path, size: tuple[int, int]) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={size[0]},{size[1]}", url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if not png.exists():
        sys.exit(f"chromium wrote no screenshot ({r.returncode}): {r.stderr[-1500:]}")


def shrink(png: Path, max_kb: int) -> None:
    """Crop the blank bottom, quantize to a palette (and scale down if still too big) to stay under ``max_kb``."""
    from PIL import Image, ImageOps

    img = Image.open(png).convert("RGB")
    box = ImageOps.invert(img).getbbox()  # the non-white part: drop the empty page below the content
    if box:
        img = img.crop((0, 0, img.width, min(img.height, box[3] + 24)))
    for colours, scale in ((256, 1.0), (128, 1.0), (64, 1.0), (64, 0.85), (48, 0.7)):
        out = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        out.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
        if png.stat().st_size <= max_kb * 1024:
            return


def pick_problem(report: dict[str, Any]) -> str | None:
    """The HTML id of a problem worth showing opened."""
    for it in reversed(report["iterations"]):
        for i, rec in enumerate(it["search"]):
            entries = rec.get("search") or []
            wrong = any(c.get("verdict") == "incorrect" for e in entries for c in e.get("candidates") or [])
            if wrong and any(e.get("pair") for e in entries) and len(entries) >= 2:
                return f"search-{it['iteration']}-p{i}"
    for k, ev in enumerate(report["evals"]):
        for i, rec in enumerate(ev["samples"]):
            if any(c.get("verdict") == "incorrect" for c in rec.get("step_checks") or []):
                return f"eval-{k}-p{i}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--prefix", default="report")
    ap.add_argument("--max-kb", type=int, default=300)
    args = ap.parse_args()
    t0 = time.time()
    html = write_report(args.run_dir)
    print(f"report written in {time.time() - t0:.1f} s: {html} ({html.stat().st_size / 1e6:.2f} MB)")
    report = json.loads((args.run_dir / "report.json").read_text(encoding="utf-8"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    views = [("dashboard", "", (1400, 1900))]
    if report["evals"]:
        views.append(("solutions", f"#focus=eval-{len(report['evals']) - 1}", (1400, 1100)))
    problem = pick_problem(report)
    if problem:
        views.append(("problem", f"#focus={problem}", (1400, 1300)))
    for name, frag, size in views:
        png = args.out_dir / f"{args.prefix}_{name}.png"
        chromium_screenshot(html.as_uri() + frag, png, size)
        shrink(png, args.max_kb)
        print(f"{png}: {png.stat().st_size / 1024:.0f} KB ({frag or 'top of the page'})")


if __name__ == "__main__":
    main()
