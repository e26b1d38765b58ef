"""`drift report`: sections, self-contained HTML, Markdown and figure files, on small oracle-world datasets."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from drift.cli import main
from drift.errors import ConfigError
from drift.report import SECTION_IDS, ReportConfig, build_report
from drift.store import open_dataset
from drift.synthetic import write_synthetic_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

FAST = {"n_boot": 60, "svg": False, "dpi": 60, "sample_rollouts": 2}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A small collected oracle-world dataset (8 prompts x 4 samples)."""
    out = tmp_path_factory.mktemp("report") / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(out), "--max-prompts", "8", "--progress", "false"]) == 0
    return out


@pytest.fixture(scope="module")
def toy_probe(toy, tmp_path_factory):
    """The toy dataset with a tiny continuation probe in DATASET/probe (a copy, so `toy` stays bare)."""
    out = tmp_path_factory.mktemp("report_probe") / "toy"
    shutil.copytree(toy, out)
    assert main(["probe", str(out), "--ratios", "0,0.5,1", "--continuations", "1", "--progress", "false",
                 "--n-boot", "50"]) == 0
    return out


def check_self_contained(html: str) -> None:
    """No external resource: no http(s) src/href, no <link>/<script src>, every <img> a data URI."""
    attrs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)["\']', html, flags=re.I)
    assert not [a for a in attrs if re.match(r"\s*(https?:)?//", a, flags=re.I)], "external src/href"
    assert "<link" not in html.lower() and not re.search(r"<script[^>]+src", html, flags=re.I)
    assert "@import" not in html and "url(" not in html
    imgs = re.findall(r"<img\b[^>]*>", html, flags=re.I)
    assert imgs, "the report has no figures"
    for img in imgs:
        assert re.search(r'src="data:image/(png|svg\+xml);base64,[A-Za-z0-9+/=]{100,}"', img), img[:120]


def _classes(dataset) -> list[str]:
    """The token classes the dataset's columns allow (teacher_mass_zone needs teacher_mass_student_topk)."""
    from drift.stats.classes import TOKEN_CLASSES
    from drift.store import open_dataset

    names = set(open_dataset(dataset).dataset("tokens").schema.names)
    return [n for n, c in TOKEN_CLASSES.items() if c.column in names]


def test_bare_dataset_report(toy, tmp_path):
    res = build_report(toy, ReportConfig(dataset=str(toy), out=str(tmp_path / "r.html"), svg=True, n_boot=60,
                                         strict=True))
    html = res.html.read_text()
    check_self_contained(html)
    for sid in SECTION_IDS:
        assert f'<section id="{sid}"' in html, sid
    status = {s.id: s.present for s in res.sections}
    assert status == {"metadata": True, "positions": True, "directions": True, "fits": True, "classes": True,
                      "trajectories": True, "tokens": True, "probe": False, "training": False, "schedule": True}
    assert "drift probe" in html and "--train RUNDIR" in html  # absent sections say how to get them
    # the metadata, fits and schedule made it into the page
    assert "LlamaForCausalLM" in html and "model selection" in html and "Export: verl" in html
    assert res.findings and any("along the response" in f for f in res.findings)
    # files: Markdown with links to figure files that exist, PNG and SVG of each figure, the schedule spec
    assert res.markdown == tmp_path / "r.md" and res.figures_dir == tmp_path / "r_files"
    md = res.markdown.read_text()
    assert md.startswith("# drift report") and "## Findings" in md and "| metric |" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((tmp_path / link).is_file() for link in links)
    pngs = sorted(p.stem for p in res.figures_dir.glob("*.png"))
    assert pngs == sorted(p.stem for p in res.figures_dir.glob("*.svg"))
    for name in ("position_kl_reverse", "position_oracle_teacher_correct", "directions", "fit_k3", "prefix_loglik",
                 "cumulative_gap", "schedule", "classes_kl_reverse"):
        assert name in pngs
    assert json.loads((res.figures_dir / "schedule.json").read_text())["kind"]
    assert html.count("<img") == len(pngs)
    # token classes: the first metric per class value, with the zone cuts printed for audit
    classes = next(s for s in res.sections if s.id == "classes")
    table = next(b for b in classes.blocks if b.kind == "table").frame
    assert list(dict.fromkeys(table["class"])) == _classes(toy)
    assert list(table[table["class"] == "teacher_entropy_zone"]["value"]) == ["low", "mid", "high"]
    assert set(table[table["class"] == "low_student_logprob"]["value"]) <= {"False", "True"}
    assert "teacher_entropy quantile cuts" in html and "first bin kl_reverse" in html


def test_probe_section_and_reused_outputs(toy_probe, tmp_path):
    # `drift fit` and `drift schedule recommend` outputs next to the dataset are shown, not recomputed
    fit = toy_probe / "fit"
    assert main(["fit", str(toy_probe), "--metric", "kl_reverse,teacher_top1", "--out", str(fit),
                 "--n-boot", "60"]) == 0
    assert main(["schedule", "recommend", str(toy_probe), "--out", str(toy_probe / "schedule.json"),
                 "--n-boot", "60"]) == 0
    res = build_report(toy_probe, ReportConfig(dataset=str(toy_probe), metrics=("kl_reverse", "k3"), strict=True,
                                               **FAST))
    assert res.html == toy_probe / "report.html"
    html = res.html.read_text()
    check_self_contained(html)
    probe = next(s for s in res.sections if s.id == "probe")
    assert probe.present and (res.figures_dir / "continuation_gap.png").is_file()
    assert any("teacher accuracy" in f for f in probe.findings)
    assert "prefix ratio" in html and "AUROC" in html
    fits = {b.title: b for s in res.sections if s.id == "fits" for b in s.blocks}
    assert "fits from fit/fits.json" in fits["kl_reverse: fitted curves"].caption
    assert "fits from computed" in fits["k3: fitted curves"].caption  # k3 is not in fits.json
    sched = next(s for s in res.sections if s.id == "schedule")
    rationale = next(b for b in sched.blocks if b.title == "Rationale").text
    assert "schedule.json" in rationale and "evidence: probe" in rationale


def test_two_steps_get_the_training_section(toy, tmp_path):
    df = open_dataset(toy).to_pandas()
    later = df.assign(step=10, kl_reverse=df["kl_reverse"] * 0.5)
    two = write_synthetic_dataset(tmp_path / "two", [df, later], config=json.loads((toy / "config.json").read_text()))
    res = build_report(two.root, ReportConfig(dataset=str(two.root), metrics=("kl_reverse",), strict=True, **FAST))
    training = next(s for s in res.sections if s.id == "training")
    assert training.present
    assert (res.figures_dir / "training_kl_reverse.png").is_file()
    assert (res.figures_dir / "training_cum_gap.png").is_file()
    assert any("step 0" in f and "step 10" in f and "-50%" in f for f in training.findings)
    check_self_contained(res.html.read_text())


def test_training_run_folder(toy, tmp_path):
    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(toy, run / "drift" / "step-000000")
    df = open_dataset(toy).to_pandas()
    write_synthetic_dataset(run / "drift" / "step-000020", df.assign(step=20, k3=df["k3"] * 0.5))

    pd.DataFrame({"step": [0, 1, 2, 20], "eval/accuracy": [0.1, None, None, 0.4],
                  "kl/k3_mean": [None, 0.8, 0.7, 0.5], "kl/k3_q25": [None, 0.1, 0.1, 0.1],
                  "kl/k3_q75": [None, 1.0, 0.9, 0.8]}).to_parquet(run / "metrics.parquet")
    # DATASET may be the run folder itself: its last step is reported, the run gives the training section
    res = build_report(run, ReportConfig(dataset=str(run), metrics=("k3",), strict=True, **FAST))
    assert res.html == run / "report.html"
    training = next(s for s in res.sections if s.id == "training")
    assert training.present and (res.figures_dir / "learning_curves.png").is_file()
    assert any("step 0" in f and "step 20" in f and "-50%" in f for f in training.findings)
    assert "step-000020" in res.html.read_text()


def test_failing_section_is_reported_not_hidden(toy, tmp_path, monkeypatch):
    import drift.report.build as build

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "trajectories_section", broken)
    res = build_report(toy, ReportConfig(dataset=str(toy), out=str(tmp_path / "r.html"), metrics=("k3",), **FAST))
    assert res.errors == {"trajectories": "RuntimeError: boom"}
    assert "could not be built" in res.html.read_text() and "boom" in res.markdown.read_text()
    with pytest.raises(RuntimeError, match="boom"):
        build_report(toy, ReportConfig(dataset=str(toy), out=str(tmp_path / "s.html"), metrics=("k3",), strict=True,
                                       **FAST))


def test_cli(toy, tmp_path, capsys):
    out = tmp_path / "cli" / "toy.html"
    assert main(["report", str(toy), "--out", str(out), "--metrics", "kl_reverse", "--n-boot", "50", "--svg",
                 "false", "--dpi", "60", "--strict"]) == 0
    text = capsys.readouterr().out
    assert "findings:" in text and str(out) in text and "open it: file://" in text
    assert out.is_file() and (tmp_path / "cli" / "toy.md").is_file() and (tmp_path / "cli" / "toy_files").is_dir()
    assert main(["report", str(toy), "--out", str(tmp_path / "x.pdf")]) == 2
    assert "--out must end in .html" in capsys.readouterr().err
    assert main(["report", str(toy), "--metrics", "nope", "--out", str(tmp_path / "y.html")]) == 2
    assert "nope" in capsys.readouterr().err


def test_config_checks():
    with pytest.raises(ConfigError) as exc:
        ReportConfig(dataset="", bins=1, sample_rollouts=0, probe="/does/not/exist")
    text = str(exc.value)
    assert "dataset is required" in text and "bins" in text and "sample_rollouts" in text and "--probe" in text
    assert ReportConfig(dataset="x", metrics="a, b").metrics == ("a", "b")


# ------------------------------------------------------------------------------------- reloaded, not recomputed
def _spy(monkeypatch):
    """Record every call of the functions that compute bins, fits, direction tests and probe analyses."""
    import drift.probe.analysis
    import drift.stats
    import drift.stats.bins

    calls: dict[str, list] = {"aggregate_bins": [], "bin_metric": [], "fit_bins": [], "direction_test": [],
                              "analyze": []}
    for module, name in ((drift.stats, "aggregate_bins"), (drift.stats.bins, "aggregate_bins"),
                         (drift.stats, "bin_metric"), (drift.stats, "fit_bins"), (drift.stats, "direction_test"),
                         (drift.probe.analysis, "analyze")):
        real = getattr(module, name)

        def wrapped(*a, _real=real, _name=name, **k):
            calls[_name].append((a, k))
            return _real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)
    return calls


def _fresh(toy_probe, tmp_path):
    """A copy of the probed toy dataset without the schedule.json an earlier test wrote (so one is recommended)."""
    out = tmp_path / "toy"
    shutil.copytree(toy_probe, out, ignore=shutil.ignore_patterns("fit", "schedule*.json", "report*"))
    return out


def test_fit_and_probe_outputs_are_reloaded_not_recomputed(toy_probe, tmp_path, monkeypatch):
    import math

    import pandas as pd

    data = _fresh(toy_probe, tmp_path)
    metrics = ("kl_reverse", "k3")
    assert main(["fit", str(data), "--metric", ",".join(metrics), "--out", str(data / "fit"), "--n-boot", "60",
                 "--strata", "quantiles:3"]) == 0
    calls = _spy(monkeypatch)
    res = build_report(data, ReportConfig(dataset=str(data), metrics=metrics, strict=True, **FAST))
    # nothing fit/ or probe/ holds is computed again: the only binnings are the absolute axis fit/ lacks and the
    # token-class splits (fit/ holds none), whose direction tests are their own
    specs = [k["spec"] if "spec" in k else a[2] for a, k in calls["aggregate_bins"]]
    assert [s.by for s in specs if not s.group_by] == ["abs"]
    assert [s.group_by for s in specs if s.group_by] == [(n,) for n in _classes(data)]
    assert not calls["bin_metric"] and not calls["fit_bins"]
    assert all(k.get("group", "all") != "all" for _, k in calls["direction_test"])
    assert not calls["analyze"]
    status = {(i["input"], i["status"]) for i in res.inputs}
    assert {("relative-position bins", "reloaded"), ("curve fits and direction tests", "reloaded"),
            ("probe analysis", "reloaded"), ("absolute-position bins", "computed"),
            ("schedule and rationale", "computed")} <= status
    meta = next(s for s in res.sections if s.id == "metadata")
    assert any(b.title == "Inputs: reloaded or computed" for b in meta.blocks)
    # what is shown is what the files say
    fits = json.loads((data / "fit" / "fits.json").read_text())
    table = next(b for s in res.sections if s.id == "directions" for b in s.blocks if b.kind == "table").frame
    for metric in metrics:
        row = table[table["metric"] == metric].iloc[0]
        d = fits[metric]["direction"]
        assert row["verdict"] == d["verdict"] and row["clusters"] == d["n_clusters"] == fits[metric]["n_clusters"]
        assert row["Spearman rho [95%]"].startswith(f"{d['rho']:+.3f}") and row["source"] == "fit/fits.json"
        sel = next(b for s in res.sections if s.id == "fits" for b in s.blocks
                   if b.kind == "table" and b.title == f"{metric}: model selection").frame
        for name, m in fits[metric]["models"].items():
            if m["converged"] and m["aic"] is not None:
                shown = sel[sel["model"].str.split(" ").str[0] == name].iloc[0]
                assert shown["AIC"] == f"{m['aic']:.1f}"
    auroc = json.loads((data / "probe" / "auroc.json").read_text())
    acc = pd.read_parquet(data / "probe" / "accuracy.parquet")
    probe = next(s for s in res.sections if s.id == "probe")
    shown = next(b for b in probe.blocks if b.kind == "table" and b.title.startswith("Accuracy")).frame
    teacher = acc[acc["model"] == "teacher"].sort_values("ratio")
    assert [c.split(" ")[0] for c in shown["teacher"]] == [f"{v:.3f}" for v in teacher["accuracy"]]
    aurocs = next(b for b in probe.blocks if b.kind == "table" and b.title.startswith("AUROC")).frame
    want = [v["score"] for v in auroc["predictors"].values()]
    assert list(aurocs["predictor"]) == want
    for (_, row), v in zip(aurocs.iterrows(), auroc["predictors"].values(), strict=True):
        a = v["auroc"]
        if a is not None and math.isfinite(a):
            assert f"{a:.3f}" in row["AUROC [95%]"] or f"{1 - a:.3f}" in row["AUROC [95%]"]
    assert any(f"{auroc['n_clusters']} prompt clusters" in f for f in probe.findings)
    # recommend got the report's probe analysis: 8 prompts < 10 clusters, so the evidence is insufficient
    sched = next(s for s in res.sections if s.id == "schedule")
    rationale = next(b for b in sched.blocks if b.title == "Rationale").text
    assert "evidence: probe" in rationale and "insufficient evidence" in rationale


def test_a_fit_without_strata_gets_only_its_strata_computed(toy_probe, tmp_path, monkeypatch):
    data = _fresh(toy_probe, tmp_path)
    assert main(["fit", str(data), "--metric", "kl_reverse", "--out", str(data / "fit"), "--n-boot", "60"]) == 0
    calls = _spy(monkeypatch)
    res = build_report(data, ReportConfig(dataset=str(data), metrics=("kl_reverse", "k3"), strict=True, **FAST))
    specs = [(k.get("spec") or a[2], list(a[1])) for a, k in calls["aggregate_bins"]]
    specs = [(s, m) for s, m in specs if not s.group_by]  # the token-class section bins on its own
    # k3 (not in fit/): relative bins with their margins; kl_reverse: its length strata only; both: absolute
    assert [(s.by, s.margins, m) for s, m in specs] == [("rel", True, ["k3"]), ("rel", False, ["kl_reverse"]),
                                                        ("abs", True, ["kl_reverse", "k3"])]
    assert [a[1] for a, _ in calls["fit_bins"]] == ["k3"]
    pooled = [k.get("stratum", "all") for _, k in calls["direction_test"] if k.get("group", "all") == "all"]
    assert pooled.count("all") == 1  # k3's pooled test; kl_reverse's comes from fits.json
    directions = next(s for s in res.sections if s.id == "directions")
    table = next(b for b in directions.blocks if b.kind == "table").frame
    assert table.set_index("metric")["source"].to_dict() == {"kl_reverse": "fit/fits.json", "k3": "computed"}
    assert all(r != "—" for r in table["by length stratum"])
    assert ("length-stratum bins and directions", "computed") in {(i["input"], i["status"]) for i in res.inputs}
