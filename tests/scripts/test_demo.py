"""`python -m scripts.demo`: the whole pipeline on the oracle world, end to end (slow: about 2-3 minutes)."""

from __future__ import annotations

import json

import pytest

from scripts.demo import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")]


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for step in ("[1/5] collect", "[2/5] probe", "[3/5] fit", "[4/5] recommend", "[5/5] report"):
        assert step in text
    assert f"report:   {(out / 'report.html').resolve()}" in text
    for path in ("manifest.json", "probe/accuracy.parquet", "probe/auroc.json", "fit/fits.json", "schedule.json",
                 "schedule.recommendation.json", "report.html", "report.md", "report_files/continuation_gap.png"):
        assert (out / path).exists(), path
    html = (out / "report.html").read_text()
    assert 'id="probe"' in html and "Not available" in html  # only the training section lacks inputs
    rec = json.loads((out / "schedule.recommendation.json").read_text())["recommendation"]
    assert rec["evidence"] == "probe" and rec["cluster"] == "prompt"
    # the default demo probes enough prompts for a real verdict (not 'insufficient')
    assert rec["n_clusters"] >= 10 and rec["verdict"] != "insufficient"
    probe = json.loads((out / "probe" / "auroc.json").read_text())
    assert probe["cluster"] == "prompt" and probe["n_clusters"] >= 10 and not probe["insufficient"]
    # a second run into the same folder replaces every output; 16 rollouts are 4 prompts: insufficient, default
    assert main(["--out", str(out), "--no-progress", "--max-rollouts", "16", "--continuations", "1",
                 "--n-boot", "100"]) == 0
    rec = json.loads((out / "schedule.recommendation.json").read_text())["recommendation"]
    assert rec["n_clusters"] == 4 and rec["verdict"] == "insufficient" and rec["schedule"]["kind"] != "fitted"
