"""Derived token classes (``--group-by teacher_entropy_zone`` ...) against pandas references."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from drift.errors import ConfigError, SchemaError
from drift.stats import BinSpec, FitConfig, aggregate_bins, bin_metric, open_tokens, run_fit
from drift.stats.classes import TOKEN_CLASSES, resolve_classes, zone_labels
from drift.synthetic import synthetic_tokens, write_synthetic_dataset

KEY = ["run_id", "step", "prompt_id", "sample_id", "position"]
CLASSES = ("teacher_entropy_zone", "low_student_logprob", "teacher_mass_zone")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.3, "c": 0.2}, n_rollouts=60, length_range=(5, 60),
                          seed=21)
    rng = np.random.default_rng(5)
    df["teacher_mass_student_topk"] = rng.beta(4, 2, size=len(df)).astype(np.float32)
    df.loc[df.index[::23], "teacher_entropy"] = np.nan  # a null input gives a null class
    return df


def _zones(values: pd.Series, cuts: list[float], labels: tuple[str, ...]) -> pd.Series:
    """The pandas reference of a zone: #{j : value >= cut_j}, NaN for a missing value."""
    v = values.astype(float)
    idx = sum((v >= c).astype(int) for c in cuts)
    out = pd.Series(np.asarray(labels, dtype=object)[idx], index=values.index)
    return out.where(v.notna(), None)


@pytest.mark.parametrize("zones", [3, 4])
def test_class_assignment_matches_pandas(frame, zones):
    src = open_tokens(frame, metrics=("kl_reverse",))
    con = src.connect()
    try:
        classes = resolve_classes(src, con, [*CLASSES, "finished"], "position >= 0", zones=zones, low_prob=0.2)
    finally:
        con.close()
    assert [c.name for c in classes] == list(CLASSES)  # plain columns are not classes
    view = open_tokens(src, derived={c.name: c.sql for c in classes})
    con = view.connect()
    got = con.sql(f"SELECT {', '.join(KEY)}, {', '.join(CLASSES)} FROM tokens").df()
    con.close()
    want = frame.merge(got, on=KEY, how="left", validate="one_to_one")
    assert len(want) == len(frame)
    labels = zone_labels(zones)
    for c in classes:
        if c.kind == "zone":
            values = frame[c.column].astype(float)
            np.testing.assert_allclose(c.cuts, np.quantile(values.dropna(), c.probs), rtol=1e-12)  # exact quantiles
            assert c.n_values == values.notna().sum() and c.labels == labels
            ref = _zones(want[c.column], list(c.cuts), labels)
            assert (want[c.name].isna() == ref.isna()).all()
            assert (want[c.name][ref.notna()] == ref[ref.notna()]).all()
            counts = want[c.name].value_counts()  # quantile zones hold ~equal token counts
            assert set(counts.index) == set(labels)
            assert counts.max() - counts.min() <= 0.02 * len(frame)
        else:
            assert c.threshold == math.log(0.2)
            ref = want["student_logprob"].astype(float) < math.log(0.2)
            assert (want[c.name].astype(bool) == ref).all()
    assert want["teacher_entropy_zone"].isna().sum() == frame["teacher_entropy"].isna().sum() > 0


def test_bins_with_classes_equal_a_naive_per_class_computation(frame):
    spec = BinSpec(bins=5, group_by=("teacher_entropy_zone", "finished"), step="pool")
    rb = aggregate_bins(frame, "kl_reverse", spec)
    table = rb.table(n_boot=0)
    (cls,) = rb.classes
    zone = _zones(frame["teacher_entropy"], list(cls.cuts), cls.labels)
    checked = 0
    for (z, fin), sub in frame.groupby([zone, frame["finished"]], dropna=True):
        # the cell of one class equals binning only that class's tokens: a class splits tokens, nothing else
        alone = bin_metric(sub, "kl_reverse", BinSpec(bins=5, step="pool"), n_boot=0)
        got = table[table["group"] == f"teacher_entropy_zone={z},finished={fin}"].reset_index(drop=True)
        assert len(got) == len(alone) > 0
        for col in ("bin", "n_tokens", "n_rollouts", "n_clusters"):
            np.testing.assert_array_equal(got[col], alone[col], err_msg=f"{z} {fin} {col}")
        for col in ("mean", "x", "sd", "q50"):
            np.testing.assert_allclose(got[col], alone[col], rtol=1e-12, err_msg=f"{z} {fin} {col}")
        checked += 1
    assert checked == 6
    # clusters stay prompts: a class cell counts the prompts with a token in it, never tokens
    prompts = frame.groupby("prompt_key").ngroups
    assert table["n_clusters"].max() <= prompts
    pooled = table[table["group"] == "all"]
    np.testing.assert_array_equal(pooled["n_tokens"], bin_metric(frame, "kl_reverse", BinSpec(bins=5, step="pool"),
                                                                 n_boot=0)["n_tokens"])


def test_fit_records_the_cuts_and_prints_them(frame, tmp_path):
    ds = write_synthetic_dataset(tmp_path / "ds", frame, rollouts_per_part=20)
    cfg = FitConfig(dataset=str(ds.root), metric=("kl_reverse",), out=str(tmp_path / "fit"), n_boot=60,
                    group_by=("teacher_mass_zone", "low_student_logprob"), zones=2, low_prob=0.05,
                    models=("linear",))
    run = run_fit(cfg)
    run.write()
    conf = json.loads((tmp_path / "fit" / "config.json").read_text())
    mass, low = conf["token_classes"]
    want = np.quantile(frame["teacher_mass_student_topk"].astype(float), [0.5])
    assert mass["name"] == "teacher_mass_zone" and mass["labels"] == ["low", "high"]
    np.testing.assert_allclose(mass["cuts"], want, rtol=1e-12)
    assert low["low_prob"] == 0.05 and low["threshold"] == math.log(0.05)
    text = run.summary()
    assert "token class teacher_mass_zone" in text and f"{want[0]:.4g}" in text
    groups = set(run.bins["group"])
    assert "teacher_mass_zone=low,low_student_logprob=True" in groups and "all" in groups
    fits = json.loads((tmp_path / "fit" / "fits.json").read_text())
    assert fits["kl_reverse"]["token_classes"][0]["cuts"] == mass["cuts"]


def test_a_missing_class_column_names_it_and_how_to_get_it(frame):
    old = frame.drop(columns=["teacher_mass_student_topk"])
    with pytest.raises(SchemaError, match="teacher_mass_student_topk") as exc:
        aggregate_bins(old, "kl_reverse", BinSpec(group_by=("teacher_mass_zone",)))
    assert "drift score" in str(exc.value)
    with pytest.raises(SchemaError, match="teacher_entropy"):  # a support=topk dataset has no entropy
        aggregate_bins(frame.drop(columns=["teacher_entropy"]), "kl_reverse",
                       BinSpec(group_by=("teacher_entropy_zone",)))


def test_class_parameters_are_validated():
    with pytest.raises(ConfigError) as exc:
        BinSpec(group_by=("teacher_entropy_zone",), zones=1, low_prob=1.5)
    assert "zones" in str(exc.value) and "low_prob" in str(exc.value)
    with pytest.raises(ConfigError, match="zones"):
        FitConfig(dataset="x", metric=("k3",), out="y", zones=11)
    assert set(TOKEN_CLASSES) == set(CLASSES)
    assert zone_labels(5) == ("z1", "z2", "z3", "z4", "z5")
