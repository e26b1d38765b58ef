"""A screenshot of the report's token view (headless Chromium), as committed in ``docs/token_view.png``.

    python -m scripts.token_view_screenshot --out docs/token_view.png            # toy oracle world, ~1 min on CPU
    python -m scripts.token_view_screenshot --report runs/toy/report.html --out /tmp/tv.png   # an existing report

Without ``--report`` it collects a small oracle-world dataset (``drift collect --preset toy --max-prompts 8``) into
a temporary folder, marks each rollout's onset, and writes its report. The onsets come from ``drift onset`` when
this drift has it, else from the oracle itself (the first token the oracle world marks wrong: the truth that
``drift onset`` estimates without oracle columns); the script says which. The page shot is the report's own
``<head>`` (its inline stylesheet) with only the token-view section, so the picture shows exactly what the report
draws. Needs Debian's ``chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def chromium_path() -> str | None:
    """The Chromium binary (None when not installed)."""
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).exists() else None


def token_view_page(report_html: str) -> str:
    """A page holding the report's ``<head>`` and only its token-view section.

    Raises:
        ValueError: the report has no token-view section.
    """
    start = report_html.find('<section id="tokens"')
    body = report_html.find("<body>")
    if start < 0 or body < 0:
        raise ValueError("the report has no token-view section (<section id=\"tokens\">); rebuild it with this drift")
    end = report_html.index("</section>", start) + len("</section>")
    return f"{report_html[:body]}<body><main>{report_html[start:end]}</main></body></html>\n"


def screenshot(page: Path, out: Path, *, width: int = 1280, height: int = 1000,
               profile: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Shoot ``page`` with headless Chromium into the PNG ``out`` (a throwaway profile unless ``profile``)."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile or tmp}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", page.resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def oracle_onsets(dataset: Path, out: Path) -> Path:
    """Onsets from the oracle world: the first position whose sampled token the oracle marks wrong (NULL: none)."""
    from drift.store import open_dataset

    con = open_dataset(dataset).duckdb()
    out.parent.mkdir(parents=True, exist_ok=True)
    con.sql(f"""COPY (SELECT run_id, step, prompt_id, sample_id, max(response_len)::INTEGER AS response_len,
                  (min(position) FILTER (WHERE NOT oracle_student_correct AND oracle_token >= 0))::INTEGER
                      AS onset_position, NULL::DOUBLE AS onset_score
                FROM tokens GROUP BY run_id, step, prompt_id, sample_id)
                TO '{out.as_posix()}' (FORMAT parquet)""")
    con.close()
    return out


def toy_report(work: Path) -> Path:
    """Collect the small toy dataset, mark its onsets and write its report; returns the HTML path."""
    from drift.cli import COMMANDS, main

    data = work / "toy"
    if main(["collect", "--preset", "toy", "--out", str(data), "--max-prompts", "8", "--progress", "false"]) != 0:
        raise SystemExit("drift collect failed")
    if "onset" in COMMANDS:
        if main(["onset", str(data), "--out", str(work / "onset")]) != 0:
            raise SystemExit("drift onset failed")
        onsets = work / "onset" / "onsets.parquet"
        print("onsets: drift onset")
    else:
        onsets = oracle_onsets(data, work / "onset" / "onsets.parquet")
        print("onsets: the oracle's first wrong token (this drift has no `drift onset`)")
    html = work / "report.html"
    if main(["report", str(data), "--out", str(html), "--onsets", str(onsets), "--n-boot", "50", "--svg", "false",
             "--dpi", "60"]) != 0:
        raise SystemExit("drift report failed")
    return html


def main(argv: list[str] | None = None) -> int:
    """Run the script; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/token_view.png", help="the PNG to write")
    ap.add_argument("--report", default=None, help="an existing report.html (default: build the toy one)")
    ap.add_argument("--width", type=int, default=1280, help="viewport width (px)")
    ap.add_argument("--height", type=int, default=1000, help="viewport height (px)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(args.report) if args.report else toy_report(Path(tmp))
        page = Path(tmp) / "token_view.html"
        page.write_text(token_view_page(html.read_text(encoding="utf-8")), encoding="utf-8")
        run = screenshot(page, out, width=args.width, height=args.height)
    if not out.is_file():
        print(run.stderr[-2000:])
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
