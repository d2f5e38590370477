"""The report in a real browser: headless Chromium renders it, runs its JavaScript, and takes a screenshot.

Skipped where Debian's ``chromium`` is not installed (.ci/run installs it when apt is usable).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from presrm.report import write_report
from tests.report_fixtures import make_eval_dir, make_run_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once on ``url``, offline, with a throw-away profile."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _pixels(png: Path):
    from matplotlib.image import imread

    img = imread(png)  # float RGB(A) in [0, 1]
    return (img[..., :3] * 255).round().astype("uint8")


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> Path:
    root = make_run_dir(tmp_path_factory.mktemp("browser") / "run", problems=60, searched=30, iterations=2)
    return write_report(root)


def test_screenshot_is_a_rendered_page(run_report, tmp_path):
    png = tmp_path / "report.png"
    r = chromium(tmp_path, run_report.as_uri(), f"--screenshot={png}", "--window-size=1400,2000")
    assert png.exists(), r.stderr[-2000:]
    assert png.stat().st_size > 20_000
    px = _pixels(png)
    assert px.shape[:2] == (2000, 1400)
    colours = {tuple(p) for p in px[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 200  # text, tables, figures: not a blank or single-colour page
    non_white = (px.min(axis=2) < 235).mean()
    assert 0.03 < non_white < 0.9
    # The figures' colours are on screen: strict-accuracy blue and flexible orange.
    assert any(abs(int(c[0]) - 0x15) < 12 and abs(int(c[1]) - 0x65) < 12 and abs(int(c[2]) - 0xC0) < 12
               for c in colours)


def _dom(tmp_path: Path, url: str) -> str:
    r = chromium(tmp_path, url, "--dump-dom")
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-2000:]
    return r.stdout


def _section(dom: str, sec: str) -> str:
    start = dom.index(f'id="{sec}"')
    end = dom.find('<section class="plist-section"', start + 1)
    return dom[start:end if end > 0 else len(dom)]


def test_javascript_paginates_and_counts(run_report, tmp_path):
    dom = _dom(tmp_path, run_report.as_uri())
    ev = _section(dom, "eval-0")
    # The script replaced the first 50 (the no-JavaScript view) by page 1: 25 problems, opened on demand.
    assert re.findall(r'<details class="prob" id="([^"]+)"', ev) == [f"eval-0-p{i}" for i in range(25)]
    assert not re.search(r'<div class="controls" hidden', ev)  # controls revealed by the script
    assert re.search(r'<span class="count"[^>]*>1–25 of 60<', ev)
    search = _section(dom, "search-1")
    assert re.search(r'<span class="count"[^>]*>1–25 of 30<', search)


def test_hash_opens_a_problem_on_its_page_and_focus_isolates_it(run_report, tmp_path):
    dom = _dom(tmp_path, run_report.as_uri() + "#eval-1-p40")
    ev = _section(dom, "eval-1")
    assert re.search(r'id="eval-1-p40"[^>]*open', ev)
    assert re.search(r'<span class="count"[^>]*>26–50 of 60<', ev)
    assert len(re.findall(r'<details class="prob"', ev)) == 25
    dom = _dom(tmp_path, run_report.as_uri() + "#focus=search-0-p3")
    assert re.search(r'<body class="focus one"', dom)
    assert re.search(r'<details class="prob focused" id="search-0-p3"[^>]*open', dom)


def test_eval_dir_report_renders(tmp_path):
    html = write_report(make_eval_dir(tmp_path / "eval", problems=8))
    dom = _dom(tmp_path, html.as_uri())
    assert re.search(r'<span class="count"[^>]*>1–8 of 8<', dom)
    assert dom.count("<svg") == 4
