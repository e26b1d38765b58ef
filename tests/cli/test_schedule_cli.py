"""``drift schedule show`` / ``make`` through ``drift.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import drift.schedules as ds
from drift.cli import main


@pytest.fixture
def iw_spec(tmp_path):
    path = tmp_path / "iw.json"
    ds.IwOpd(gamma=0.5).save(path)
    return path


def test_show_verl_prints_formula_table_export_and_notes(iw_spec, capsys):
    assert main(["schedule", "show", str(iw_spec), "--format", "verl"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("iw_opd (code form): w_t = 1 + 0.5·clamp(")
    assert "actor_rollout_ref.actor.policy_loss.iw_opd_weight_max=1.5" in out
    assert "actor_rollout_ref.actor.policy_loss.only_reverse_kl_advantages=true" in out
    assert "export to verl (exact):" in out and "notes:" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0-10%", "90-100%"))]
    # constant |A|: code-form IW-OPD is 1 + 0.5(1 - t/100); decile means 1.4775 and 1.0275
    assert rows[0][1] == "1.478" and rows[1][1] == "1.028"


def test_show_inline_json_trl_and_annealed_columns(capsys):
    assert main(["schedule", "show", '{"kind": "iw_opd", "gamma": 0.5}', "--format", "trl"]) == 0
    out = capsys.readouterr().out
    assert "IWOPDConfig(" in out and "iw_opd_gamma=0.5," in out
    assert main(["schedule", "show", '{"kind": "prefix_weight"}', "--total-steps", "11"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("position"))
    assert header.split()[1:] == ["step", "1", "step", "6", "step", "11"]
    assert '"kind": "prefix_weight"' in out  # default format json


def test_show_no_equivalent_exits_2_with_plain_message(capsys):
    code = main(["schedule", "show", '{"kind": "suffix_mask", "frac": 0.3}', "--format", "verl"])
    captured = capsys.readouterr()
    assert code == 2
    assert "suffix_mask has no equivalent in verl's IW-OPD fork: it only masks prefixes" in captured.err
    assert "0-10%" in captured.out  # the shape is still shown


def test_show_approximate(capsys):
    spec = '{"kind": "iw_opd", "denominator": "paper"}'
    assert main(["schedule", "show", spec, "--format", "verl"]) == 2
    assert "--approximate" in capsys.readouterr().err
    assert main(["schedule", "show", spec, "--format", "verl", "--approximate", "--style", "yaml"]) == 0
    out = capsys.readouterr().out
    assert "(APPROXIMATE)" in out and "iw_opd_weight_max: 1.5" in out


def test_show_bad_spec(tmp_path, capsys):
    assert main(["schedule", "show", '{"kind": "nope"}']) == 2
    assert "unknown schedule kind 'nope'" in capsys.readouterr().err
    assert main(["schedule", "show", str(tmp_path / "missing.json")]) == 2
    assert "neither JSON text nor an existing file" in capsys.readouterr().err


def test_make_writes_a_loadable_spec(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["schedule", "make", "--kind", "iw_opd", "--gamma", "0.5", "--use-abs", "false",
                 "--denominator", "paper", "--out", str(out)]) == 0
    assert ds.load(out) == ds.IwOpd(gamma=0.5, use_abs=False, denominator="paper")
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["schedule", "make", "--kind", "iw_opd", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["schedule", "make", "--kind", "uniform", "--out", str(out), "--force"]) == 0
    assert ds.load(out) == ds.Uniform()


@pytest.mark.parametrize("argv,expected", [
    (["--kind", "prefix_mask", "--frac", "0.3"], ds.PrefixMask(start_ratio=0.3, end_ratio=0.3)),
    (["--kind", "prefix_weight", "--start-ratio", "0.2", "--end-ratio", "0.9", "--anneal", "linear",
      "--multiplier", "2", "--min-tokens", "3"],
     ds.PrefixWeight(start_ratio=0.2, end_ratio=0.9, anneal="linear", multiplier=2.0, min_tokens=3)),
    (["--kind", "teacher_conf", "--window", "32", "--floor", "0.05"], ds.TeacherConf(window=32, floor=0.05)),
    (["--kind", "ideal_ratio", "--alpha", "0.01", "--normalize", "true", "--blend-gamma", "0.5"],
     ds.IdealRatio(alpha=0.01, normalize=True, blend_gamma=0.5)),
    (["--kind", "vector", "--values", "1.5,1.0,0.5", "--x", "abs", "--edges", "0,64,128,256"],
     ds.Vector(values=(1.5, 1.0, 0.5), x="abs", edges=(0, 64, 128, 256))),
    (["--kind", "fitted", "--family", "exponential", "--params", '{"a": 1, "tau": 0.3, "c": 0.5}',
      "--source", '{"dataset": "runs/toy"}'],
     ds.Fitted(family="exponential", params={"a": 1, "tau": 0.3, "c": 0.5}, source={"dataset": "runs/toy"})),
])
def test_make_prints_spec_for_each_kind(argv, expected, capsys):
    assert main(["schedule", "make", *argv]) == 0
    assert ds.load(json.loads(capsys.readouterr().out)) == expected


@pytest.mark.parametrize("argv,message", [
    (["--kind", "iw_opd", "--window", "3"], "--window does not apply to kind 'iw_opd'"),
    (["--kind", "iw_opd", "--gamma", "abc"], "--gamma 'abc'"),
    (["--kind", "iw_opd", "--gamma", "-1"], "gamma must be a number >= 0"),
    (["--kind", "iw_opd", "--use-abs", "maybe"], "expected true or false"),
    (["--kind", "fitted", "--family", "power"], r"needs parameter(s) ['params']"),
])
def test_make_errors_exit_2(argv, message, capsys):
    assert main(["schedule", "make", *argv]) == 2
    assert message in capsys.readouterr().err


def test_help_describes_every_kind(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["schedule", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for kind in ds.KINDS:
        assert f"  {kind} " in out
    assert "1 + gamma·clamp(1 - C_t/(C_L + eps), 0, 1)" in out
    assert main(["schedule"]) == 1  # no action: prints help


def test_recommend_cli_cluster_flags(tmp_path, capsys):
    from drift.synthetic import synthetic_tokens, write_synthetic_dataset

    df = synthetic_tokens("exponential", {"a": 0.9, "tau": 0.3, "c": 0.05}, n_rollouts=24, samples_per_prompt=4,
                          length_range=(20, 40), rollout_sd=0.0, token_sd=0.0, seed=0, metric="q")
    df["oracle_teacher_correct"] = np.random.default_rng(0).random(len(df)) < np.clip(df.pop("q").to_numpy(), 0, 1)
    ds = write_synthetic_dataset(tmp_path / "d", df)
    out = tmp_path / "s.json"
    assert main(["schedule", "recommend", str(ds.root), "--out", str(out), "--n-boot", "50"]) == 0
    side = json.loads(out.with_name("s.recommendation.json").read_text())
    assert side["config"]["cluster"] == "prompt" and side["config"]["min_clusters"] == 10
    rec = side["recommendation"]
    assert rec["cluster"] == "prompt" and rec["n_clusters"] == 6 and rec["verdict"] == "insufficient"
    assert "insufficient evidence" in capsys.readouterr().out
    assert main(["schedule", "recommend", str(ds.root), "--out", str(out), "--n-boot", "50", "--force",
                 "--cluster", "rollout", "--min-clusters", "5"]) == 0
    rec = json.loads(out.with_name("s.recommendation.json").read_text())["recommendation"]
    assert rec["cluster"] == "rollout" and rec["n_clusters"] == 24 and rec["verdict"] != "insufficient"
