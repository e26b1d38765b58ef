"""The report as a browser sees it: headless Chromium loads the file offline, every image decodes, a screenshot renders.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped without it. The page marks itself on load with
``data-images-ok="decoded/total"`` (an inline script in the template), which ``--dump-dom`` lets us read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drift.cli import main
from drift.report import ReportConfig, build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (apt-get install -y chromium)"),
    pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning"),
]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with no network side-traffic and a throwaway profile."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def images_ok(profile: Path, page: Path) -> tuple[int, int]:
    out = chromium(profile, "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri())
    m = re.search(r'data-images-ok="(\d+)/(\d+)"', out.stdout)
    assert m, f"the page did not finish loading; chromium said:\n{out.stderr[-2000:]}"
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    data = root / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(data), "--max-prompts", "8", "--progress", "false"]) == 0
    return build_report(data, ReportConfig(dataset=str(data), n_boot=100, strict=True))


def test_every_image_loads_and_the_page_renders(report, tmp_path):
    html = report.html.read_text()
    n_img = html.count("<img")
    assert n_img >= 10
    assert images_ok(tmp_path / "profile", report.html) == (n_img, n_img)

    shot = tmp_path / "shot.png"
    out = chromium(tmp_path / "profile", "--window-size=1280,1800", f"--screenshot={shot}",
                   report.html.resolve().as_uri())
    assert shot.is_file(), out.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (1800, 1280)
    assert img.std() > 20 and (img < 128).mean() > 0.01  # text and figures, not a blank page


def test_a_broken_image_is_caught(report, tmp_path):
    # the check itself works: corrupt one embedded PNG and it is reported as not decoded
    html = report.html.read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAAbroken', html, count=1)
    page = tmp_path / "broken.html"
    page.write_text(broken)
    ok, total = images_ok(tmp_path / "profile", page)
    assert total == html.count("<img") and ok == total - 1
