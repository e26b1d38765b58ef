"""End-to-end collect/score on tiny models: schema, consistency with the naive scorer, resume, guards on OUT."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift.collect.config import CollectConfig, ScoreConfig, ScoringOptions
from drift.collect.pipeline import collect, score
from drift.collect.prompts import PromptRecord
from drift.collect.reference import naive_score_item
from drift.collect.scoring import ScoringItem
from drift.errors import DatasetError, DatasetExistsError
from drift.schema import validate_schema
from drift.store import DatasetWriter, open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

KEY = ["prompt_id", "sample_id", "position"]


def _prompts(n: int = 7) -> list[PromptRecord]:
    out = [PromptRecord(id=f"p{i}", prompt=" ".join(f"w{(3 * i + j) % 90}" for j in range(2 + i % 4)),
                        answer=str(i)) for i in range(n - 1)]
    out.append(PromptRecord(id="chat", prompt=({"role": "user", "content": "w1 w2 w3"},),
                            teacher_prompt=({"role": "system", "content": "w7 w7"},
                                            {"role": "user", "content": "w1 w2 w3"})))
    return out


def _cfg(out, **kw) -> CollectConfig:
    scoring = ScoringOptions(progress=False, chunk_size=kw.pop("chunk_size", 8), num_threads=1)
    base = dict(out=str(out), student="s", teacher="t", prompts="p.jsonl", samples_per_prompt=3,
                max_new_tokens=10, part_size=6, seed=3, scoring=scoring)
    base.update(kw)
    return CollectConfig(**base)


@pytest.fixture(scope="module")
def collected(tiny_pair, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "run"
    ds = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out))
    return ds


def test_tables_match_schema_and_counts(collected):
    validate_schema(collected.dataset("tokens").schema, "tokens")
    validate_schema(collected.dataset("rollouts").schema, "rollouts")
    m = collected.manifest
    assert m["status"] == "complete" and m["n_rollouts"] == 7 * 3 and len(m["parts"]) == 4  # 2 prompts/part
    rollouts, tokens = collected.to_pandas("rollouts"), collected.to_pandas("tokens")
    assert len(tokens) == m["n_tokens"] == rollouts["response_len"].sum()
    assert json.loads((collected.root / "config.json").read_text())["config"]["samples_per_prompt"] == 3


def test_token_rows_are_consistent_with_rollouts(collected, tiny_tokenizer):
    rollouts, tokens = collected.to_pandas("rollouts"), collected.to_pandas("tokens")
    for _, r in rollouts.iterrows():
        t = tokens[(tokens.prompt_id == r.prompt_id) & (tokens.sample_id == r.sample_id)].sort_values("position")
        assert t.token_id.tolist() == list(r.response_ids)
        assert (t.position.to_numpy() == np.arange(r.response_len)).all()
        np.testing.assert_allclose(t.rel_position, np.arange(r.response_len) / r.response_len)
        ended = r.response_ids[-1] == tiny_tokenizer.eos_token_id
        assert r.finished == ended and r.truncated == (not ended and r.response_len == 10)
        assert t.finished.all() == r.finished
    assert set(rollouts.sample_id) == {0, 1, 2}
    chat = rollouts[rollouts.prompt_id == "chat"].iloc[0]
    assert len(chat.teacher_prompt_ids) > len(chat.student_prompt_ids) and chat.teacher_prompt is not None


def test_stored_metrics_equal_the_naive_scorer(collected, tiny_pair):
    rollouts, tokens = collected.to_pandas("rollouts"), collected.to_pandas("tokens")
    for _, r in rollouts.sample(6, random_state=0).iterrows():
        ref = naive_score_item(*tiny_pair, ScoringItem(r.student_prompt_ids, r.teacher_prompt_ids, r.response_ids))
        t = tokens[(tokens.prompt_id == r.prompt_id) & (tokens.sample_id == r.sample_id)].sort_values("position")
        for key, want in ref.items():
            if key in t:
                np.testing.assert_allclose(t[key].astype(float), want, atol=1e-5, err_msg=key)
        assert (t.teacher_top1 == (t.teacher_rank == 0)).all()
    assert (tokens.kl_reverse >= 0).all() and (tokens.kl_forward >= 0).all()


def test_collected_tokens_hold_the_teacher_argmax_and_mass_columns(collected):
    tokens = collected.dataset("tokens").schema
    assert tokens.field("teacher_argmax").type == pa.int32()
    assert tokens.field("teacher_mass_student_topk").type == pa.float32()
    t = collected.to_pandas("tokens")
    assert ((t.teacher_mass_student_topk >= 0) & (t.teacher_mass_student_topk <= 1)).all()
    assert (t.teacher_top1 == (t.token_id == t.teacher_argmax)).all()  # rank 0 <=> y_t is the argmax (no ties)


def test_an_older_dataset_without_the_new_columns_validates_and_fits(collected, tmp_path, capsys):
    """Datasets written before teacher_argmax / teacher_mass_student_topk existed still open, verify and fit; asking
    for a missing column says how to add it."""
    from drift.cli import main
    from drift.schema import NEWER_COLUMNS

    old = tmp_path / "old"
    shutil.copytree(collected.root, old)
    for part in sorted((old / "tokens").glob("*.parquet")):
        pq.write_table(pq.read_table(part).drop_columns(list(NEWER_COLUMNS)), part)
    ds = open_dataset(old)
    assert ds.verify() == [] and not set(NEWER_COLUMNS) & set(ds.dataset("tokens").schema.names)
    validate_schema(ds.dataset("tokens").schema, "tokens")
    assert len(ds.to_pandas("tokens")) == collected.manifest["n_tokens"]
    assert main(["fit", str(old), "--metric", "kl_reverse", "--bins", "3", "--n-boot", "50", "--out",
                 str(tmp_path / "fit")]) == 0
    assert (tmp_path / "fit" / "fits.json").is_file()
    capsys.readouterr()
    assert main(["fit", str(old), "--metric", "teacher_mass_student_topk", "--bins", "3", "--n-boot", "50",
                 "--out", str(tmp_path / "fit2")]) == 2
    err = capsys.readouterr().err
    assert "'teacher_mass_student_topk' is not in this dataset" in err and "drift score --rollouts" in err


def test_parquet_metadata_names_estimator_and_models(collected):
    meta = collected.metadata
    assert meta["support"] == "full" and meta["estimator"] == "full"
    assert meta["temperature"] == 1.0 and meta["k"] == 16 and meta["student"]["fingerprint"] is None


def test_same_seed_same_rows(collected, tiny_pair, tiny_tokenizer, tmp_path):
    again = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(tmp_path / "again"))
    a = collected.to_pandas("tokens").sort_values(KEY).reset_index(drop=True)
    b = again.to_pandas("tokens").sort_values(KEY).reset_index(drop=True)
    # run_id names the output folder, and prompt_key = run_id + prompt id: both differ by construction
    pd.testing.assert_frame_equal(a.drop(columns=["run_id", "prompt_key"]), b.drop(columns=["run_id", "prompt_key"]))


def test_resume_after_crash_gives_exactly_the_uninterrupted_rows(collected, tiny_pair, tiny_tokenizer, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "run"
    real = DatasetWriter.write_part
    state = {"n": 0}

    def crashing(self, index, rollouts, tokens):
        if state["n"] == 2:
            # a crash mid-part: a part file is in place but the manifest never hears of it
            self._write_table(tokens, f"tokens/part-{index:05d}.parquet")
            raise KeyboardInterrupt
        state["n"] += 1
        return real(self, index, rollouts, tokens)

    monkeypatch.setattr(DatasetWriter, "write_part", crashing)
    with pytest.raises(KeyboardInterrupt):
        collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out, run_id="run"))
    monkeypatch.setattr(DatasetWriter, "write_part", real)
    half = open_dataset(out)
    assert half.manifest["status"] == "interrupted" and len(half.manifest["parts"]) == 2
    with pytest.raises(DatasetExistsError, match="--if-exists resume"):
        collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out, run_id="run"))
    done = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out, run_id="run", if_exists="resume"))
    assert done.manifest["status"] == "complete" and done.manifest["resumed"] == 1
    for table in ("tokens", "rollouts"):
        key = KEY if table == "tokens" else KEY[:2]
        a = collected.to_pandas(table).sort_values(key).reset_index(drop=True)
        b = done.to_pandas(table).sort_values(key).reset_index(drop=True)
        assert len(b) == len(a) and not b.duplicated(subset=key).any()
        pd.testing.assert_frame_equal(a, b)


def test_resume_with_other_settings_is_refused(collected, tiny_pair, tiny_tokenizer, tmp_path):
    out = tmp_path / "r"
    collect(*tiny_pair, tiny_tokenizer, _prompts(3), _cfg(out))
    with pytest.raises(DatasetError, match="temperature"):
        collect(*tiny_pair, tiny_tokenizer, _prompts(3), _cfg(out, if_exists="resume", temperature=0.5))


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tiny_pair, tiny_tokenizer, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(DatasetExistsError, match="refusing to delete"):
        collect(*tiny_pair, tiny_tokenizer, _prompts(2), _cfg(tmp_path / "mine", if_exists="overwrite"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_self_check_result_is_recorded(tiny_pair, tiny_tokenizer, tmp_path):
    cfg = _cfg(tmp_path / "sc")
    cfg = dataclasses.replace(cfg, scoring=dataclasses.replace(cfg.scoring, self_check=True))
    ds = collect(*tiny_pair, tiny_tokenizer, _prompts(2), cfg)
    assert ds.manifest["self_check"]["self_max_kl"] < 1e-6


def test_score_rescoring_reproduces_collect_at_a_new_step(collected, tiny_pair, tiny_tokenizer, tmp_path):
    rows = collected.read("rollouts").to_pylist()
    cfg = ScoreConfig(rollouts=str(collected.root), out=str(tmp_path / "s"), student="s", teacher="t", step=200,
                      part_size=5, scoring=ScoringOptions(progress=False, chunk_size=3))
    ds = score(*tiny_pair, tiny_tokenizer, rows, cfg)
    a = collected.to_pandas("tokens").sort_values(KEY).reset_index(drop=True)
    b = ds.to_pandas("tokens").sort_values(KEY).reset_index(drop=True)
    assert (b.step == 200).all() and (b.run_id == "run").all()
    for col in ("student_logprob", "teacher_logprob", "kl_reverse", "cum_abs_gap", "teacher_rank"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), atol=1e-5, err_msg=col)


def test_score_from_jsonl_text_and_ids(tiny_pair, tiny_tokenizer, tmp_path):
    from drift.collect.inputs import read_rollouts

    path = tmp_path / "ext.jsonl"
    lines = [
        {"id": "a", "prompt": "w1 w2", "response": "w3 w4 </s>", "answer": "x"},
        {"id": "a", "prompt": "w1 w2", "response": "w5", "teacher_prompt": "w9 w9 w1 w2"},
        {"prompt_id": "b", "prompt_ids": [1, 8, 9], "response_ids": [10, 11, 2], "teacher_prompt_ids": [1, 9]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = read_rollouts(path, tiny_tokenizer, stop_ids=[2])
    assert [r["sample_id"] for r in rows] == [0, 1, 0]
    assert rows[0]["finished"] and not rows[1]["finished"] and rows[2]["finished"]
    assert rows[1]["teacher_prompt_ids"] != rows[1]["student_prompt_ids"]
    cfg = ScoreConfig(rollouts=str(path), out=str(tmp_path / "o"), student="s", teacher="t",
                      scoring=ScoringOptions(progress=False))
    ds = score(*tiny_pair, tiny_tokenizer, rows, cfg)
    assert ds.manifest["n_tokens"] == 3 + 1 + 3


def test_bad_rollout_jsonl_lists_every_problem(tiny_tokenizer, tmp_path):
    from drift.collect.inputs import read_rollouts
    from drift.errors import InputFormatError

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "w1"}\nnot json\n{"prompt_ids": [1, -2], "response_ids": [3]}\n')
    with pytest.raises(InputFormatError) as err:
        read_rollouts(path, tiny_tokenizer)
    msg = str(err.value)
    assert "line 1" in msg and "line 2" in msg and "line 3" in msg and "3 problem(s)" in msg
