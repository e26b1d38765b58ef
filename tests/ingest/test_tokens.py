"""The generic token-record import and the shared import driver (parts, resume, checks, schema by support)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift.errors import AlignmentError, AlignmentWarning, DatasetError, InputFormatError
from drift.ingest import ImportConfig, import_from_config
from drift.schema import FULL_VOCAB_COLUMNS, TOPK_COLUMNS
from drift.store import open_dataset, repair_command
from tests.ingest.fixtures import make_rollouts


@pytest.fixture(scope="module")
def rollouts(models):
    _, _, S, T = models
    return make_rollouts(S, T, np.random.default_rng(7), n_prompts=6, samples=2)


def _line(r, step=3, **over):
    obj = {"prompt_ids": r.prompt_ids, "response_ids": r.response_ids, "student_logprobs": r.student_lp.tolist(),
           "teacher_logprobs": r.teacher_lp.tolist(), "rollout_logprobs": r.rollout_lp.tolist(), "step": step,
           "prompt_id": r.prompt_id, "reward": r.reward, "finished": r.finished}
    obj.update(over)
    return {k: v for k, v in obj.items() if v is not None}


def _write(path: Path, objs) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def _cfg(tmp_path, path, **kw) -> ImportConfig:
    kw.setdefault("out", str(tmp_path / "out"))
    kw.setdefault("scoring", None)
    if kw["scoring"] is None:
        from drift.collect.config import ScoringOptions

        kw["scoring"] = ScoringOptions(progress=False)
    return ImportConfig(source="tokens", path=str(path), **kw)


def _tokens(ds):
    return ds.read("tokens").to_pandas().sort_values(["step", "prompt_id", "sample_id", "position"])


def test_import_exact_values_and_recomputed_columns(tmp_path, rollouts):
    src = _write(tmp_path / "a.jsonl", [_line(r) for r in rollouts])
    ds = import_from_config(_cfg(tmp_path, src, part_size=5))
    tok = ds.read("tokens").to_pandas()
    assert ds.manifest["n_rollouts"] == len(rollouts) and len(ds.manifest["parts"]) == 3
    meta = ds.metadata
    assert meta["support"] == "sampled" and meta["has_teacher"] and meta["source_format"] == "tokens"
    assert not set(FULL_VOCAB_COLUMNS + TOPK_COLUMNS) & set(tok.columns)  # absent, not zero
    roll = ds.read("rollouts").to_pandas()
    # order of appearance: rollout i of the file is sample (i % 2) of prompt p{i // 2}
    for i, r in enumerate(rollouts):
        rows = tok[(tok.prompt_id == r.prompt_id) & (tok.sample_id == i % 2)].sort_values("position")
        np.testing.assert_allclose(rows.student_logprob, r.student_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.teacher_logprob, r.teacher_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.rollout_logprob, r.rollout_lp, rtol=0, atol=1e-6)
        a = r.teacher_lp - r.student_lp  # drift's sign: advantage = teacher - student, k1 = -advantage
        np.testing.assert_allclose(rows.advantage, a, atol=1e-5)
        np.testing.assert_allclose(rows.k1, -a, atol=1e-5)
        np.testing.assert_allclose(rows.k3, np.exp(a) - a - 1, atol=1e-5)
        c = np.concatenate([[0.0], np.cumsum(np.abs(a))[:-1]])  # exclusive
        np.testing.assert_allclose(rows.cum_abs_gap, c, atol=1e-5)
        np.testing.assert_allclose(rows.cum_abs_gap_frac, c / np.abs(a).sum(), atol=1e-5)
        np.testing.assert_allclose(rows.prefix_logratio, np.concatenate([[0.0], np.cumsum(a)[:-1]]), atol=1e-5)
        assert list(rows.token_id) == r.response_ids and set(rows.step) == {3}
        ro = roll[(roll.prompt_id == r.prompt_id) & (roll.sample_id == i % 2)].iloc[0]
        assert list(ro.student_prompt_ids) == r.prompt_ids and ro.reward == r.reward and ro.finished == r.finished
    # the two samples of a prompt share its cluster key; prompts do not
    keys = roll.groupby("prompt_id").prompt_key.nunique()
    assert (keys == 1).all() and roll.prompt_key.nunique() == 6
    # every part records the file and chunk it came from; config.json records the command and the source
    assert [p["source"]["chunk"] for p in ds.manifest["parts"]] == [0, 1, 2]
    assert [p["source"]["last"] for p in ds.manifest["parts"]] == [False, False, True]
    assert ds.config["command"] == "import" and ds.config["source"]["files"] == ["a.jsonl"]
    assert ds.config["tokenizer"] is None  # no --tokenizer, no --student: the text columns stay empty
    assert roll.prompt.isna().all()


def test_parquet_equals_jsonl_and_parts_never_span_files(tmp_path, rollouts):
    folder = tmp_path / "logs"
    folder.mkdir()
    _write(folder / "0.jsonl", [_line(r) for r in rollouts[:5]])
    pq.write_table(pa.Table.from_pylist([_line(r) for r in rollouts[5:]]), folder / "1.parquet")
    ds = import_from_config(_cfg(tmp_path, folder, part_size=4))
    assert [(p["source"]["file"], p["n_rollouts"]) for p in ds.manifest["parts"]] == [
        ("0.jsonl", 4), ("0.jsonl", 1), ("1.parquet", 4), ("1.parquet", 3)]
    one = _write(tmp_path / "all.jsonl", [_line(r) for r in rollouts])
    ref = import_from_config(_cfg(tmp_path, one, out=str(tmp_path / "ref")))
    a, b = _tokens(ds), _tokens(ref)
    for col in ("student_logprob", "teacher_logprob", "k3", "cum_abs_gap_frac", "token_id"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())


def test_without_teacher_columns_are_absent_and_analyses_say_what_adds_them(tmp_path, rollouts):
    from drift.cli import main

    src = _write(tmp_path / "s.jsonl", [_line(r, teacher_logprobs=None) for r in rollouts])
    ds = import_from_config(_cfg(tmp_path, src))
    cols = set(ds.read("tokens").column_names)
    assert "student_logprob" in cols and not {"teacher_logprob", "advantage", "k1", "k3", "cum_abs_gap"} & cols
    assert ds.metadata["has_teacher"] is False
    assert any("teacher" in m and "drift score" in m for m in ds.metadata["missing_analyses"])
    assert main(["fit", str(ds.root), "--metric", "k3", "--out", str(tmp_path / "fit")]) == 2


def test_teacher_mixed_presence_is_refused(tmp_path, rollouts):
    src = _write(tmp_path / "m.jsonl", [_line(r, teacher_logprobs=None if i == 3 else r.teacher_lp.tolist())
                                        for i, r in enumerate(rollouts)])
    with pytest.raises(InputFormatError, match="teacher_logprob: 11 of 12 rollouts"):
        import_from_config(_cfg(tmp_path, src, part_size=64))


def test_student_check_passes_and_a_shift_is_named(tmp_path, models, rollouts):
    s, t, _, _ = models
    src = _write(tmp_path / "a.jsonl", [_line(r) for r in rollouts])
    ds = import_from_config(_cfg(tmp_path, src, student=str(s), teacher=str(t)))
    checks = ds.manifest["checks"]
    assert checks["student"]["verdict"] == "ok" and checks["student"]["median_abs_diff"] < 1e-4
    assert checks["teacher"]["verdict"] == "ok"
    assert ds.config["tokenizer"]["vocab_hash"]  # found with --student: texts decoded, ids re-scorable
    assert ds.read("rollouts").column("response_text").null_count == 0
    # entry t scores token t + 1: a one-token shift of the student column
    shifted = [_line(r, student_logprobs=[*r.student_lp[1:].tolist(), -1.0]) for r in rollouts]
    with pytest.raises(AlignmentError, match="shifted by one token"):
        import_from_config(_cfg(tmp_path, _write(tmp_path / "sh.jsonl", shifted), student=str(s),
                                out=str(tmp_path / "sh")))
    assert not (tmp_path / "sh").exists()  # checked before anything is written
    # the teacher's log-probs are not the student's
    with pytest.raises(AlignmentError, match="does not match the student"):
        import_from_config(_cfg(tmp_path, src, student=str(t), out=str(tmp_path / "wrong")))


def test_sign_check_warns_on_swapped_columns(tmp_path):
    rng = np.random.default_rng(0)
    objs = []
    for p in range(20):
        for _ in range(2):
            n = 12
            s = -rng.uniform(0.1, 2.0, n)
            t = s - rng.uniform(0.2, 1.0, n)  # on-policy: k1 = s - t > 0 on average
            objs.append({"prompt_ids": [1, 7 + p], "response_ids": [9] * n, "student_logprobs": t.tolist(),
                         "teacher_logprobs": s.tolist(), "prompt_id": f"q{p}"})  # swapped
    with pytest.warns(AlignmentWarning, match="look swapped"):
        ds = import_from_config(_cfg(tmp_path, _write(tmp_path / "x.jsonl", objs)))
    sign = ds.manifest["checks"]["sign"]
    assert sign["verdict"] == "swapped?" and sign["mean_k1"] < 0 and sign["n_prompts"] == 20
    for o in objs:
        o["student_logprobs"], o["teacher_logprobs"] = o["teacher_logprobs"], o["student_logprobs"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignmentWarning)
        ok = import_from_config(_cfg(tmp_path, _write(tmp_path / "y.jsonl", objs), out=str(tmp_path / "ok")))
    assert ok.manifest["checks"]["sign"]["verdict"] == "ok"


def test_malformed_file_keeps_earlier_parts_and_resume_completes(tmp_path, rollouts):
    folder = tmp_path / "logs"
    folder.mkdir()
    _write(folder / "0.jsonl", [_line(r) for r in rollouts[:6]])
    bad = [json.dumps(_line(r)) for r in rollouts[6:]]
    bad[2] = bad[2][:40]  # a cut-off line
    (folder / "1.jsonl").write_text("\n".join(bad) + "\n")
    cfg = _cfg(tmp_path, folder, part_size=4)
    with pytest.raises(InputFormatError, match=r"(?s)1\.jsonl.*line 3.*not valid JSON") as exc:
        import_from_config(cfg)
    assert "--if-exists resume" in str(exc.value)
    ds = open_dataset(cfg.out)
    assert ds.manifest["status"] == "failed" and ds.manifest["n_rollouts"] == 6  # 0.jsonl's two parts kept
    cmd = repair_command(cfg.out, ds.config)
    assert cmd is not None and cmd.startswith("drift import tokens ") and "--if-exists resume" in cmd
    _write(folder / "1.jsonl", [_line(r) for r in rollouts[6:]])
    done = import_from_config(_cfg(tmp_path, folder, part_size=4, if_exists="resume"))
    ref = import_from_config(_cfg(tmp_path, folder, part_size=4, out=str(tmp_path / "ref")))
    assert done.manifest["status"] == "complete" and done.manifest["n_rollouts"] == len(rollouts)
    a, b = _tokens(done), _tokens(ref)
    assert len(a) == len(b)
    np.testing.assert_array_equal(a[["sample_id", "position", "token_id"]].to_numpy(),
                                  b[["sample_id", "position", "token_id"]].to_numpy())
    # a file changed after it was imported: resume refuses instead of mixing two versions
    _write(folder / "0.jsonl", [_line(r) for r in rollouts[:5]])
    with pytest.raises(DatasetError, match="changed since part"):
        import_from_config(_cfg(tmp_path, folder, part_size=4, if_exists="resume"))


@pytest.mark.parametrize(("obj", "match"), [
    ({"prompt_ids": [1, 2], "response_ids": [3, 4]}, "missing 'student_logprobs'"),
    ({"prompt_ids": [1, 2], "response_ids": [3, 4], "student_logprobs": [-1.0]}, "has 1 entries but"),
    ({"prompt_ids": [1, -2], "response_ids": [3], "student_logprobs": [-1.0]}, "non-negative integers"),
    ({"prompt_ids": [1], "response_ids": [3], "student_logprobs": [0.7]}, "positive values"),
    ({"prompt_ids": [1], "response_ids": [3], "student_logprobs": ["x"]}, "list of numbers"),
    ({"prompt_ids": [1], "response_ids": [3], "student_logprobs": [-1.0], "step": "7"}, "'step'"),
])
def test_bad_records_name_file_and_line(tmp_path, obj, match):
    src = _write(tmp_path / "bad.jsonl", [{"prompt_ids": [1], "response_ids": [3], "student_logprobs": [-1.0]}, obj])
    with pytest.raises(InputFormatError, match=match) as exc:
        import_from_config(_cfg(tmp_path, src))
    assert "bad.jsonl" in str(exc.value) and ("line 2" in str(exc.value))
    assert not (tmp_path / "out").exists()


def test_imported_dataset_is_rescored_by_drift_score(tmp_path, models, rollouts):
    """The command every 'needs full-vocab scoring' message names really adds the columns."""
    from drift.cli import main

    s, t, _, _ = models
    src = _write(tmp_path / "a.jsonl", [_line(r) for r in rollouts])
    ds = import_from_config(_cfg(tmp_path, src, student=str(s), check_rollouts=0))
    out = tmp_path / "full"
    assert main(["score", "--rollouts", str(ds.root), "--student", str(s), "--teacher", str(t), "--out", str(out),
                 "--progress", "false"]) == 0
    full = open_dataset(out)
    assert full.metadata["support"] == "full"
    a, b = _tokens(ds), _tokens(full)
    np.testing.assert_allclose(b.student_logprob.to_numpy(), a.student_logprob.to_numpy(), atol=1e-5)
    assert {"kl_reverse", "teacher_rank"} <= set(b.columns)
    assert (b.groupby("prompt_id").prompt_key.nunique() == 1).all()


def test_files_with_other_optional_fields_conform_or_stop(tmp_path, rollouts):
    folder = tmp_path / "logs"
    folder.mkdir()
    _write(folder / "0.jsonl", [_line(r) for r in rollouts[:6]])
    _write(folder / "1.jsonl", [_line(r, rollout_logprobs=None) for r in rollouts[6:]])
    ds = import_from_config(_cfg(tmp_path, folder))
    tok = ds.read("tokens").to_pandas()  # one schema for every part (DuckDB and pyarrow read them together)
    n0 = sum(len(r.response_ids) for r in rollouts[:6])
    assert tok.rollout_logprob.isna().sum() == len(tok) - n0  # the second file's rows: null, never zero
    _write(folder / "0.jsonl", [_line(r, rollout_logprobs=None) for r in rollouts[:6]])
    _write(folder / "1.jsonl", [_line(r) for r in rollouts[6:]])
    with pytest.raises(InputFormatError, match=r"1\.jsonl holds different fields.*rollout_logprob"):
        import_from_config(_cfg(tmp_path, folder, out=str(tmp_path / "o2")))
