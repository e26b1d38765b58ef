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


# ----------------------------------------------------------------------------------------------- token view
@pytest.fixture(scope="module")
def token_report(report, tmp_path_factory):
    """The same dataset reported with onsets (the oracle's first wrong token, as scripts.token_view_screenshot)."""
    from scripts.token_view_screenshot import oracle_onsets

    data = report.html.parent
    root = tmp_path_factory.mktemp("browser_tokens")
    onsets = oracle_onsets(data, root / "onsets.parquet")
    return data, build_report(data, ReportConfig(dataset=str(data), out=str(root / "r.html"), onsets=str(onsets),
                                                 n_boot=20, svg=False, dpi=60, strict=True))


def test_the_token_view_renders_with_onsets_and_hover(token_report, tmp_path):
    import html as htmllib

    from drift.store import open_dataset

    data, res = token_report
    out = chromium(tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", res.html.resolve().as_uri())
    dom = out.stdout
    assert 'data-images-ok="' in dom, out.stderr[-2000:]
    section = dom.split('<section id="tokens"', 1)[1].split("</section>", 1)[0]
    rolls = re.findall(r'<div class="tv-roll" data-tokens="(\d+)">(.*?)</div>\s*</div>', section, flags=re.S)
    assert len(rolls) == 4
    df = open_dataset(data).to_pandas(columns=["prompt_id", "sample_id", "position", "teacher_argmax",
                                               "oracle_student_correct", "oracle_token"])
    n_onsets = 0
    for n_tok, body in rolls:
        spans = re.findall(r'<span class="tok( at-onset)?" data-t="(\d+)" style="[^"]*" title="([^"]*)"', body)
        assert len(spans) == int(n_tok) > 0  # every token is in the DOM
        pid, sid = re.search(r"<b>prompt (\S+) · sample (\d+)", body).groups()
        rows = df[(df["prompt_id"] == pid) & (df["sample_id"] == int(sid))].sort_values("position")
        assert [int(t) for _, t, _ in spans] == rows["position"].tolist()
        for (_, _, title), top in zip(spans, rows["teacher_argmax"], strict=True):
            hover = htmllib.unescape(title)
            assert re.search(rf"teacher's top token: '[^']*' \(id {int(top)}\)", hover), hover
            assert "teacher's rank of the sampled token: " in hover and "A_t = " in hover
        wrong = rows[~rows["oracle_student_correct"] & (rows["oracle_token"] >= 0)]["position"]
        marked = [int(t) for at, t, _ in spans if at]
        assert marked == ([int(wrong.min())] if len(wrong) else [])
        if marked:
            n_onsets += 1
            assert "▸onset</span>" in body and "ONSET: the rollout leaves the teacher here" in htmllib.unescape(body)
    assert n_onsets == 2  # half the rollouts drawn have an onset
    assert section.count('type="radio"') == 3 and "colour by:" in section


def test_token_view_screenshot(token_report, tmp_path):
    from PIL import Image

    from scripts.token_view_screenshot import screenshot, token_view_page

    _, res = token_report
    page = tmp_path / "tv.html"
    page.write_text(token_view_page(res.html.read_text()))
    shot = tmp_path / "token_view.png"
    run = screenshot(page, shot, width=1280, height=900, profile=tmp_path / "profile")
    assert shot.is_file(), run.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert rgb.shape == (900, 1280, 3)
    gray = rgb.mean(axis=2)
    assert gray.std() > 10 and (gray < 128).mean() > 0.005  # text, not a blank page
    red = (rgb[..., 0] - rgb[..., 2] > 60).mean()  # tokens the teacher dislikes (A_t < 0) are red
    assert red > 1e-4
