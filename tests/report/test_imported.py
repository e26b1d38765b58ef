"""`drift report` (and fit, recommend) on imported datasets: sampled support, no teacher, sampler-vs-trainer gap.

The datasets are written the way a user writes them: drift's generic token records (drift/ingest/tokens.py) with
the exact log-probs of two tiny models (tests/ingest/fixtures.py) and a sampler log-prob that lags the trainer's
more and more along the response, imported with ``drift import tokens``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from drift.cli import main
from drift.errors import DatasetError
from drift.report import IMPORT_SECTION_IDS, SECTION_IDS, ReportConfig, build_report
from tests.ingest.fixtures import make_rollouts, save_tiny_pair
from tests.report.test_report import check_self_contained

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

FAST = {"n_boot": 60, "svg": False, "dpi": 60, "sample_rollouts": 2, "bins": 10}
LAG = 0.5  # the sampler's log-prob is the trainer's minus LAG * t/T (plus noise): the gap grows along the response
EPS = 0.2


def records(rollouts, rng, *, teacher: bool = True, steps=(3,), mask_last: int = 0) -> list[dict]:
    out = []
    for step in steps:
        for r in rollouts:
            T = len(r.response_ids)
            sampler = r.student_lp - LAG * np.arange(T) / T + rng.normal(0, 0.02, T)
            rec = {"prompt_ids": r.prompt_ids, "response_ids": r.response_ids,
                   "student_logprobs": r.student_lp.tolist(), "rollout_logprobs": sampler.tolist(),
                   "prompt_id": r.prompt_id, "reward": r.reward, "finished": r.finished, "step": step}
            if teacher:
                rec["teacher_logprobs"] = r.teacher_lp.tolist()
            if mask_last:
                rec["loss_mask"] = [1] * (T - mask_last) + [0] * mask_last
            out.append(rec)
    return out


def write_jsonl(path, recs) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def expected_gap(recs, bins: int) -> dict[str, np.ndarray]:
    """Per relative bin: token count, mean trainer - sampler log-prob and share outside the clip band, computed from
    the float32 values the import stores (loss-masked tokens left out)."""
    b_all, d_all = [], []
    for r in recs:
        s = np.asarray(r["student_logprobs"], np.float32).astype(np.float64)
        q = np.asarray(r["rollout_logprobs"], np.float32).astype(np.float64)
        T = len(s)
        keep = np.asarray(r.get("loss_mask", [1] * T), bool)
        b = np.minimum(np.floor(np.arange(T) / T * bins), bins - 1).astype(int)
        b_all.append(b[keep])
        d_all.append((s - q)[keep])
    b, d = np.concatenate(b_all), np.concatenate(d_all)
    n = np.bincount(b, minlength=bins)
    have = n > 0  # the report lists the bins that hold tokens
    return {"bins": np.flatnonzero(have), "n": n[have], "mean": (np.bincount(b, d, minlength=bins)[have] / n[have]),
            "abs": np.bincount(b, np.abs(d), minlength=bins)[have] / n[have],
            "outside": np.bincount(b, (np.abs(np.exp(d) - 1) > EPS).astype(float), minlength=bins)[have] / n[have]}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    s, t = save_tiny_pair(tmp_path_factory.mktemp("models"))
    S, T = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (s, t))
    return make_rollouts(S, T, np.random.default_rng(7), n_prompts=12, samples=2, min_len=10, max_len=20)


@pytest.fixture(scope="module")
def sampled(rollouts, tmp_path_factory):
    """A sampled-support import with teacher and sampler log-probs: (dataset folder, the records written)."""
    root = tmp_path_factory.mktemp("sampled")
    recs = records(rollouts, np.random.default_rng(1))
    write_jsonl(root / "logs.jsonl", recs)
    assert main(["import", "tokens", str(root / "logs.jsonl"), "--out", str(root / "ds")]) == 0
    return root / "ds", recs


def md_table(md: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``**title**`` (cells stripped)."""
    block = md.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def first_number(cell: str) -> float:
    text = cell.split(" ")[0]
    return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)


def test_sampled_import_through_fit_recommend_and_report(sampled, capsys):
    ds, recs = sampled
    assert main(["fit", str(ds), "--metric", "k3,cum_abs_gap_frac", "--out", str(ds / "fit"), "--n-boot", "60"]) == 0
    assert main(["schedule", "recommend", str(ds), "--out", str(ds / "schedule.json"), "--n-boot", "60"]) == 0
    capsys.readouterr()
    assert main(["report", str(ds), "--n-boot", "60", "--bins", "10", "--svg", "false", "--dpi", "60",
                 "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "support 'sampled' (imported from tokens logs)" in printed and "drift score --rollouts" in printed
    html, md = (ds / "report.html").read_text(), (ds / "report.md").read_text()
    check_self_contained(html)
    for sid in (*SECTION_IDS, *IMPORT_SECTION_IDS):
        assert f'<section id="{sid}"' in html, sid
    # defaults that exist: k1 stands in for kl_reverse; teacher_top1 is named as absent, with the command
    figures = {p.stem for p in (ds / "report_files").glob("*.png")}
    assert {"position_k1", "position_k3", "position_cum_abs_gap_frac", "sampler_mismatch"} <= figures
    assert not {"position_kl_reverse", "position_teacher_top1"} & figures
    positions = md.split("## Metrics by position", 1)[1].split("\n## ", 1)[0]
    assert "kl_reverse: not in this dataset: 'kl_reverse' needs full-vocabulary scoring" in positions
    assert "Drawn in its place: k1" in positions
    assert "teacher_top1: not in this dataset" in positions and "drift import vllm" in positions
    # the metadata says the support, the source format and what sampled support cannot show
    meta = md.split("## Run metadata", 1)[1].split("\n## ", 1)[0]
    settings = dict(row[:2] for row in md_table(meta, "Import source and support"))
    assert settings["support"].startswith("sampled") and settings["source format"] == "tokens"
    assert settings["files"] == "1: logs.jsonl"
    assert "What this dataset cannot show" in meta and "full-vocabulary KL (kl_reverse, kl_forward)" in meta
    assert f"`drift score --rollouts {ds} --student S --teacher T --out {ds}-full`" in meta  # names this dataset
    checks = {row[0]: row[1] for row in md_table(meta, "Import checks")}
    assert checks["sign"] == "ok"
    # fit/ and schedule.json were reloaded, not recomputed
    inputs = md_table(meta, "Inputs: reloaded or computed")
    assert ["curve fits and direction tests", "k3, cum_abs_gap_frac", "reloaded", "fit/fits.json"] in inputs
    assert any(r[0] == "schedule and rationale" and r[2] == "reloaded" for r in inputs)
    # the sampler-vs-trainer gap by relative position, against the values written
    want = expected_gap(recs, 10)
    rows = md_table(md, "Trainer − sampler log-prob by relative position")
    assert [r[0] for r in rows] == [f"{b / 10:.2f}–{(b + 1) / 10:.2f}" for b in range(10)]
    assert list(want["bins"]) == list(range(10))
    np.testing.assert_array_equal([int(r[4]) for r in rows], want["n"])
    assert [int(r[5]) for r in rows] == [12] * 10  # prompt clusters
    np.testing.assert_allclose([first_number(r[1]) for r in rows], want["mean"], rtol=5e-3, atol=1e-6)
    np.testing.assert_allclose([first_number(r[2]) for r in rows], want["abs"], rtol=5e-3, atol=1e-6)
    np.testing.assert_allclose([first_number(r[3]) for r in rows], want["outside"], atol=5e-5)
    assert want["outside"][0] == 0 and want["outside"][-1] > 0.5  # the fixture does cross the band late
    # |Δ| has its own interval in every bin (prompt-cluster bootstrap), and grows with the planted lag
    assert all(re.fullmatch(r"\S+ \[\S+, \S+\]", r[2]) for r in rows) and want["abs"][-1] > 3 * want["abs"][0]
    summary = dict(md_table(md, "Over all tokens"))
    n = int(want["n"].sum())
    assert summary["tokens compared"] == f"{n:,} of {n:,}"
    assert summary["\\|Δ\\| along the response"].startswith("rises")
    finding = next(f for f in re.findall(r"^- (.*)$", md.split("## Findings", 1)[1].split("\n## ", 1)[0], re.M)
                   if f.startswith("trainer − sampler"))
    assert f"of {n:,} tokens outside the ±0.2 clip band" in finding and "|Δ| rises along the response" in finding


def test_requested_metrics_the_support_cannot_give(sampled, tmp_path):
    ds, _ = sampled
    res = build_report(ds, ReportConfig(dataset=str(ds), out=str(tmp_path / "r.html"), metrics=("kl_reverse",),
                                        strict=True, **FAST))
    by_id = {s.id: s for s in res.sections}
    for sid in ("positions", "directions", "fits"):
        assert by_id[sid].missing and "'kl_reverse' needs full-vocabulary scoring" in by_id[sid].missing
        assert "drift score --rollouts" in by_id[sid].missing
    assert by_id["training"].missing  # one step: the usual hint
    assert by_id["trajectories"].present and by_id["sampler"].present and by_id["schedule"].present
    # one absent, one present: the present one is drawn, the absent one noted in the section
    res = build_report(ds, ReportConfig(dataset=str(ds), out=str(tmp_path / "s.html"), metrics=("k3", "argmax_agree"),
                                        strict=True, **FAST))
    positions = next(s for s in res.sections if s.id == "positions")
    assert positions.present
    notes = [p for b in positions.blocks if b.kind == "text" for p in b.paragraphs]
    assert any(p.startswith("argmax_agree: not in this dataset") for p in notes)
    assert (res.figures_dir / "position_k3.png").is_file()
    with pytest.raises(DatasetError, match="nope"):  # a column no support explains is still an error
        build_report(ds, ReportConfig(dataset=str(ds), out=str(tmp_path / "t.html"), metrics=("nope",), **FAST))


def test_import_without_teacher_and_with_a_loss_mask(rollouts, tmp_path):
    recs = records(rollouts[::2], np.random.default_rng(2), teacher=False, steps=(0, 5), mask_last=2)
    write_jsonl(tmp_path / "logs.jsonl", recs)
    ds = tmp_path / "ds"
    assert main(["import", "tokens", str(tmp_path / "logs.jsonl"), "--out", str(ds)]) == 0
    assert main(["schedule", "recommend", str(ds), "--out", str(ds / "schedule.json"), "--n-boot", "60"]) == 0
    res = build_report(ds, ReportConfig(dataset=str(ds), strict=True, **FAST))
    by_id = {s.id: s for s in res.sections}
    after = SECTION_IDS.index("trajectories") + 1  # the sampler section follows the per-rollout trajectories
    assert [s.id for s in res.sections] == [*SECTION_IDS[:after], "sampler", *SECTION_IDS[after:]]
    # no teacher: the student's own log-prob is drawn, and every teacher metric says what adds it
    assert (res.figures_dir / "position_student_logprob.png").is_file()
    notes = [p for b in by_id["positions"].blocks if b.kind == "text" for p in b.paragraphs]
    assert any(p.startswith("k3: not in this dataset: 'k3' needs a teacher's log-probs") for p in notes)
    assert by_id["trajectories"].missing and "teacher" in by_id["trajectories"].missing
    # two steps: drift over training, without the cumulative gap (named as absent)
    training = by_id["training"]
    assert training.present and (res.figures_dir / "training_student_logprob.png").is_file()
    assert any("cum_abs_gap: not in this dataset" in p for b in training.blocks if b.kind == "text"
               for p in b.paragraphs)
    meta = res.markdown.read_text().split("## Run metadata", 1)[1].split("\n## ", 1)[0]
    assert "| teacher log-probs | none in the source |" in meta and "every teacher column" in meta
    assert any("no teacher log-probs" in f and "support 'sampled'" in f for f in res.findings)
    # the sampler gap leaves out the tokens not trained on, and is given per step
    want = expected_gap(recs, 10)
    n_all = sum(len(r["response_ids"]) for r in recs)
    md = res.markdown.read_text()
    summary = dict(md_table(md, "Over all tokens"))
    assert summary["tokens compared"].startswith(f"{int(want['n'].sum()):,} of {n_all:,} ({n_all - want['n'].sum():,} "
                                                 "left out")
    rows = md_table(md, "Trainer − sampler log-prob by relative position")
    assert [r[0] for r in rows] == [f"{b / 10:.2f}–{(b + 1) / 10:.2f}" for b in want["bins"]]
    np.testing.assert_array_equal([int(r[4]) for r in rows], want["n"])
    np.testing.assert_allclose([first_number(r[1]) for r in rows], want["mean"], rtol=5e-3, atol=1e-6)
    np.testing.assert_allclose([first_number(r[3]) for r in rows], want["outside"], atol=5e-5)
    # every derived quantity leaves the masked tokens out (NULL), not only the gap
    from drift.report.imported import sampler_metrics_sql
    from drift.stats.reader import open_tokens

    src = open_tokens(ds, derived=sampler_metrics_sql(["loss_mask"], EPS))
    con = src.connect()
    counts = con.sql("SELECT count(trainer_minus_sampler), count(abs_trainer_minus_sampler), count(outside_clip), "
                     "count(*) FILTER (WHERE loss_mask) FROM tokens").fetchall()[0]
    con.close()
    assert counts == (want["n"].sum(),) * 4
    per_step = md_table(md, "Per training step")
    assert [r[0] for r in per_step] == ["0", "5"] and [int(r[4]) for r in per_step] == [want["n"].sum() // 2] * 2


def test_sampler_section_of_an_import_without_sampler_logprobs(rollouts, tmp_path):
    recs = records(rollouts, np.random.default_rng(3))
    for r in recs:
        del r["rollout_logprobs"]
    write_jsonl(tmp_path / "logs.jsonl", recs)
    ds = tmp_path / "ds"
    assert main(["import", "tokens", str(tmp_path / "logs.jsonl"), "--out", str(ds)]) == 0
    res = build_report(ds, ReportConfig(dataset=str(ds), metrics=("k3",), strict=True, **FAST))
    sampler = next(s for s in res.sections if s.id == "sampler")
    assert sampler.missing.startswith("not in this dataset: the sampler's log-probs (rollout_logprob)")
    assert "drift import slime" in sampler.missing and "rollout_logprobs" in sampler.missing
    assert "Not available:* not in this dataset: the sampler's" in res.markdown.read_text()


def test_default_metrics_by_support():
    from drift.report import DEFAULT_METRICS
    from drift.report.imported import Support, choose_metrics
    from drift.schema import TOKEN_COLUMNS, required_token_columns

    defaults = (*DEFAULT_METRICS, "oracle_teacher_correct")
    full = Support.of({"support": "full"}, [c.name for c in TOKEN_COLUMNS])
    assert not full.imported and choose_metrics((), defaults, full) == (DEFAULT_METRICS, {})
    topk = Support.of({"support": "topk", "source_format": "vllm"}, required_token_columns("topk"))
    metrics, absent = choose_metrics((), defaults, topk)
    assert metrics == ("k1", "k3", "cum_abs_gap_frac", "teacher_top1") and list(absent) == ["kl_reverse"]
    assert "support='topk'" in absent["kl_reverse"] and "Drawn in its place: k1" in absent["kl_reverse"]
    bare = Support.of({"support": "sampled", "has_teacher": False}, required_token_columns("sampled", teacher=False))
    metrics, absent = choose_metrics((), defaults, bare)
    assert metrics == ("student_logprob",) and set(absent) == set(DEFAULT_METRICS)
    assert bare.imported and all("drift score" in h for h in bare.limits())
