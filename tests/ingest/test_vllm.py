"""``drift import vllm``: a vLLM teacher's prompt_logprobs merged into a collected dataset by token ids.

The fixture lines are built the way vLLM builds them (``vllm/logprobs.py`` ``append_logprobs_for_next_position``
after ``Sampler.gather_logprobs``): entry 0 is None, entry i scores token i from the log_softmax of position i-1,
the realized token is inserted first with its 1-based rank (#{v : logp_v >= logp_y}), then the top-K with ranks
1..K; JSON keys are the token ids as strings. The teacher is a third tiny model, so every teacher column differs
from the collected one, and peaked (a random tiny model is near-uniform: a wrong context would pass a 0.05-nat
check).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drift.collect.config import CollectConfig, ScoringOptions
from drift.collect.pipeline import collect
from drift.collect.prompts import PromptRecord
from drift.errors import AlignmentError, InputFormatError
from drift.ingest import ImportConfig, import_from_config, open_source, run_import
from drift.ingest.checks import sampled_logprobs
from drift.schema import FULL_VOCAB_COLUMNS
from tests.helpers import make_tiny_model, make_tiny_tokenizer
from tests.ingest.fixtures import make_rollouts, save_tiny_pair

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

K = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(collected dataset, its rollouts as dicts, vLLM teacher model, paths of student / vLLM teacher)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm")
    s_path, t_path = save_tiny_pair(root)
    v_path = root / "vteacher"
    sharp = make_tiny_model(2)
    with torch.no_grad():  # logits x8: a peaked teacher, so contexts and positions differ by far more than 0.05 nats
        sharp.model.norm.weight.mul_(8.0)
    sharp.save_pretrained(v_path)
    make_tiny_tokenizer().save_pretrained(v_path)
    S = AutoModelForCausalLM.from_pretrained(s_path).eval()
    T = AutoModelForCausalLM.from_pretrained(t_path).eval()
    V = AutoModelForCausalLM.from_pretrained(v_path).eval()
    prompts = [PromptRecord(id=f"p{i}", prompt=" ".join(f"w{(5 * i + j) % 90}" for j in range(2 + i % 3)))
               for i in range(4)]
    prompts.append(PromptRecord(id="chat", prompt=({"role": "user", "content": "w1 w2 w3"},),
                                teacher_prompt=({"role": "system", "content": "w7 w7"},
                                                {"role": "user", "content": "w1 w2 w3"})))
    cfg = CollectConfig(out=str(root / "ds"), student=str(s_path), teacher=str(t_path), prompts="p.jsonl",
                        samples_per_prompt=2, max_new_tokens=6, part_size=4, seed=5,
                        scoring=ScoringOptions(progress=False, num_threads=1))
    ds = collect(S, T, make_tiny_tokenizer(), prompts, cfg)
    rows = ds.read("rollouts").to_pylist()
    return ds, rows, V, s_path, v_path


def _logp(model, ids) -> np.ndarray:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy()


def vllm_entries(model, ids, k: int = K) -> list:
    """vLLM's prompt_logprobs for ``ids`` under ``model`` (k = -1: the whole vocabulary)."""
    logp = _logp(model, ids)
    out: list = [None]
    for i in range(1, len(ids)):
        row, y = logp[i - 1], ids[i]
        top = np.argsort(-row, kind="stable")[: (len(row) if k == -1 else k)]
        d = {str(y): {"logprob": float(row[y]), "rank": int((row >= row[y]).sum()), "decoded_token": f"t{y}"}}
        for r, t in enumerate(top):
            d[str(int(t))] = {"logprob": float(row[t]), "rank": r + 1, "decoded_token": f"t{t}"}
        out.append(d)
    return out


def _ids(row) -> list[int]:
    return list(row["teacher_prompt_ids"]) + list(row["response_ids"])


def request_output(row, V, k: int = K, keys: bool = True, **over) -> dict:
    """A dumped RequestOutput line (what users write offline), with the rollout's keys."""
    obj = {"request_id": f"r-{row['prompt_id']}-{row['sample_id']}", "prompt": None, "prompt_token_ids": _ids(row),
           "prompt_logprobs": vllm_entries(V, _ids(row), k), "outputs": [{"index": 0, "token_ids": [7]}],
           "finished": True}
    if keys:
        obj.update(prompt_id=row["prompt_id"], sample_id=row["sample_id"], step=row["step"])
    obj.update(over)
    return obj


def completion(row, V, k: int = K) -> dict:
    """The /v1/completions response to prompt=ids, max_tokens=1, prompt_logprobs=k, return_token_ids=true."""
    return {"id": "cmpl-abc", "object": "text_completion", "created": 1, "model": "teacher",
            "choices": [{"index": 0, "text": " w3", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                         "token_ids": [10], "prompt_logprobs": vllm_entries(V, _ids(row), k),
                         "prompt_token_ids": _ids(row)}],
            "usage": {"prompt_tokens": len(_ids(row)), "total_tokens": len(_ids(row)) + 1, "completion_tokens": 1}}


def _write(path: Path, objs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def _cfg(tmp_path, path, ds, **kw) -> ImportConfig:
    kw.setdefault("out", str(tmp_path / "out"))
    return ImportConfig(source="vllm", path=str(path), rollouts=str(ds.root),
                        scoring=ScoringOptions(progress=False, num_threads=1), **kw)


def _by_rollout(ds) -> dict:
    tok = ds.read("tokens").to_pandas()
    return {(r.step, r.prompt_id, r.sample_id): g.sort_values("position") for r, g in
            [(g.iloc[0], g) for _, g in tok.groupby(["step", "prompt_id", "sample_id"])]}


def test_merge_exact_values_ranks_topk_and_recomputed_columns(tmp_path, setup):
    ds, rows, V, _, _ = setup
    order = np.random.default_rng(0).permutation(len(rows))
    lines = [request_output(rows[i], V) if j % 2 else completion(rows[i], V) for j, i in enumerate(order)]
    half = len(lines) // 2
    _write(tmp_path / "v" / "a.jsonl", lines[:half])
    _write(tmp_path / "v" / "b.jsonl", lines[half:])
    out = import_from_config(_cfg(tmp_path, tmp_path / "v", ds, part_size=3, teacher_id="vt"))
    meta = out.metadata
    assert meta["support"] == "topk" and meta["k"] == K and meta["teacher_source"] == "vllm_prompt_logprobs"
    assert out.manifest["n_rollouts"] == len(rows)
    old, new = _by_rollout(ds), _by_rollout(out)
    cols = set(next(iter(new.values())).columns)
    assert not set(FULL_VOCAB_COLUMNS) & cols  # the old teacher's full-vocab columns are gone, not zero
    notes = out.manifest["source_notes"]
    assert "teacher_argmax" in notes["replaced_columns"] and "teacher_mass_student_topk" in notes["dropped_columns"]
    assert next(iter(new.values())).teacher_argmax.dtype == np.int32
    roll = {(r["step"], r["prompt_id"], r["sample_id"]): r for r in out.read("rollouts").to_pylist()}
    for row in rows:
        key = (row["step"], row["prompt_id"], row["sample_id"])
        t, o, r = new[key], old[key], roll[key]
        tp, resp = list(row["teacher_prompt_ids"]), list(row["response_ids"])
        want = sampled_logprobs(V, [tp], [resp])[0]  # drift's own scorer: the first response token is entry len(tp)
        np.testing.assert_allclose(t.teacher_logprob, want, rtol=0, atol=2e-5)
        assert not np.allclose(t.teacher_logprob, o.teacher_logprob, atol=1e-3)  # a different teacher
        np.testing.assert_array_equal(t.student_logprob, o.student_logprob)
        adv = t.teacher_logprob.to_numpy(float) - t.student_logprob.to_numpy(float)
        np.testing.assert_allclose(t.advantage, adv, atol=1e-6)
        np.testing.assert_allclose(t.k1, -adv, atol=1e-6)
        np.testing.assert_allclose(t.prefix_logratio, np.concatenate([[0], np.cumsum(adv)[:-1]]), atol=1e-5)
        np.testing.assert_allclose(t.teacher_prefix_logprob, np.concatenate([[0], np.cumsum(want)[:-1]]), atol=1e-4)
        logp = _logp(V, tp + resp)
        for j, y in enumerate(resp):
            row_lp = logp[len(tp) + j - 1]
            assert t.teacher_rank.iloc[j] == int((row_lp > row_lp[y]).sum())  # 0-based (no ties here)
            top = np.argsort(-row_lp, kind="stable")[:K]
            assert list(t.teacher_topk_ids.iloc[j]) == top.tolist()
            assert t.teacher_argmax.iloc[j] == top[0]  # the rank-1 entry of the list, not the old teacher's
            np.testing.assert_allclose(t.teacher_topk_logprobs.iloc[j], row_lp[top], atol=1e-6)
        assert (t.teacher_top1 == (t.teacher_rank == 0)).all() and (t.teacher_id == "vt").all()
        assert r["prompt_key"] == row["prompt_key"] and r["teacher_prompt_ids"] == row["teacher_prompt_ids"]
        assert r["teacher_prompt"] == row["teacher_prompt"] and r["prompt"] == row["prompt"]
    chat = next(r for r in rows if r["prompt_id"] == "chat")
    assert len(chat["teacher_prompt_ids"]) > len(chat["student_prompt_ids"])  # the shift trap is exercised
    ranks = np.concatenate([g.teacher_rank.to_numpy() for g in new.values()])
    assert (ranks >= 0).all() and (ranks > K - 1).any() and (ranks < K).any()  # in and outside the top K


def test_teacher_argmax_is_absent_without_a_top_k_list_and_says_why(tmp_path, setup):
    """prompt_logprobs=0 scores the realized token only: no list, so no argmax column (absent, never guessed)."""
    from drift.schema import support_hint

    ds, rows, V, _, _ = setup
    src = _write(tmp_path / "a.jsonl", [request_output(r, V, k=0) for r in rows])
    out = import_from_config(_cfg(tmp_path, src, ds))
    assert out.metadata["support"] == "topk" and out.metadata["k"] == 0
    tok = out.read("tokens")
    assert "teacher_argmax" not in tok.column_names and "teacher_rank" in tok.column_names
    assert "prompt_logprobs >= 1" in support_hint("teacher_argmax", "topk")
    assert out.verify() == []


def test_topk_argmax_takes_the_listed_id_of_largest_logprob_ties_to_the_lower_id():
    from drift.ingest.records import ImportedRollout, topk_argmax

    r = ImportedRollout(prompt_ids=[1], response_ids=[5, 6, 7], teacher_topk_ids=[[9, 3, 4], [8, 2], [4]],
                        teacher_topk_logprobs=[[-0.5, -0.5, -2.0], [-1.0, -0.1], [-0.2]])
    assert topk_argmax([r, r]).tolist() == [3, 2, 4, 3, 2, 4]
    r.teacher_topk_ids[1] = []
    r.teacher_topk_logprobs[1] = []
    assert topk_argmax([r]) is None


def test_unscored_rollouts_are_dropped_and_counted_duplicates_keep_the_first(tmp_path, setup):
    ds, rows, V, _, _ = setup
    lines = [request_output(r, V, keys=False) for r in rows[:5]]
    src = _write(tmp_path / "a.jsonl", [*lines, lines[0]])
    cfg = _cfg(tmp_path, src, ds)
    plan = open_source(cfg)
    out = run_import(plan, cfg)
    assert out.manifest["n_rollouts"] == 5
    assert plan.notes["rollouts_dropped_unscored"] == len(rows) - 5 and plan.notes["duplicate_lines"] == 1
    got = {(r["prompt_id"], r["sample_id"]) for r in out.read("rollouts").to_pylist()}
    assert got == {(r["prompt_id"], r["sample_id"]) for r in rows[:5]}


def test_a_shifted_list_is_caught_by_the_realized_token_check(tmp_path, setup):
    ds, rows, V, _, _ = setup
    obj = request_output(rows[0], V)
    e = obj["prompt_logprobs"]
    obj["prompt_logprobs"] = [None, e[1], *e[1:-1]]  # entry i holds token i-1's dict
    src = _write(tmp_path / "a.jsonl", [request_output(rows[1], V), obj])
    with pytest.raises(InputFormatError, match=r"a\.jsonl line 2.*missing from.*shifted by one token.*late"):
        import_from_config(_cfg(tmp_path, src, ds))
    obj["prompt_logprobs"] = [None, *e[2:], e[-1]]  # entry i holds token i+1's dict
    _write(src, [obj])
    with pytest.raises(InputFormatError, match=r"shifted by one token.*early"):
        import_from_config(_cfg(tmp_path, src, ds, if_exists="overwrite"))


def test_full_vocab_lists_pass_the_re_score_check_and_a_shift_fails_it(tmp_path, setup):
    ds, rows, V, s_path, v_path = setup
    plain = [r for r in rows if r["prompt_id"] != "chat"]
    src = _write(tmp_path / "a.jsonl", [request_output(r, V, k=-1) for r in plain])
    out = import_from_config(_cfg(tmp_path, src, ds, student=str(s_path), teacher=str(v_path)))
    checks = json.loads((out.root / "config.json").read_text())["checks"]
    assert checks["teacher"]["verdict"] == "ok" and checks["student"]["verdict"] == "ok"
    assert out.metadata["k"] == len(make_tiny_tokenizer())
    shifted = []
    for r in plain:  # every token is in every full-vocab dict: only re-scoring can see the shift
        obj = request_output(r, V, k=-1)
        e = obj["prompt_logprobs"]
        obj["prompt_logprobs"] = [None, e[1], *e[1:-1]]
        shifted.append(obj)
    _write(src, shifted)
    with pytest.raises(AlignmentError, match="teacher_logprob"):
        import_from_config(_cfg(tmp_path, src, ds, teacher=str(v_path), if_exists="overwrite"))


def test_lines_matching_no_rollout_are_named(tmp_path, setup):
    ds, rows, V, _, _ = setup
    chat = next(r for r in rows if r["prompt_id"] == "chat")
    ids = list(chat["student_prompt_ids"]) + list(chat["response_ids"])  # scored without the system prompt
    bad = {"prompt_token_ids": ids, "prompt_logprobs": vllm_entries(V, ids)}
    src = _write(tmp_path / "a.jsonl", [request_output(rows[0], V), bad])
    with pytest.raises(InputFormatError, match=r"line 2: .*match no rollout.*teacher-only system prompt"):
        import_from_config(_cfg(tmp_path, src, ds))
    other = request_output(rows[0], V, sample_id=rows[0]["sample_id"] + 7)  # ids match, keys do not
    _write(src, [other])
    with pytest.raises(InputFormatError, match=r"line 1.*keys differ"):
        import_from_config(_cfg(tmp_path, src, ds, if_exists="overwrite"))
    ids = [1, *_ids(rows[0])]  # an extra leading BOS
    _write(src, [{"prompt_token_ids": ids, "prompt_logprobs": vllm_entries(V, ids)}])
    with pytest.raises(InputFormatError, match="extra leading token"):
        import_from_config(_cfg(tmp_path, src, ds, if_exists="overwrite"))


def _broken(row, V):
    ok = request_output(row, V)
    e = ok["prompt_logprobs"]
    zero = [None, *({t: {**v, "rank": v["rank"] - 1} for t, v in d.items()} for d in e[1:])]
    logits = [None, *({t: {**v, "logprob": v["logprob"] + 9.0} for t, v in d.items()} for d in e[1:])]
    ids = ok["prompt_token_ids"]
    return [
        ({**ok, "prompt_logprobs": e[1:]}, "entry 0, null for the first token, is missing"),
        ({**ok, "prompt_logprobs": [e[1], *e[1:]]}, "entry 0 must be null"),
        ({**ok, "prompt_logprobs": zero}, "1-based"),
        ({**ok, "prompt_logprobs": logits}, "logprobs-mode"),
        ({**ok, "prompt_logprobs": None}, "did not ask for them"),
        ({**ok, "prompt_logprobs": [None, None, *e[2:]]}, "entry 1 is null"),
        ({**ok, "prompt_logprobs": [None, {"5": {"logprob": -1.0}}, *e[2:]]}, "entry 1 is not"),
        ({"choices": [{"index": 0, "prompt_logprobs": e}]}, "return_token_ids"),
        ({"choices": [{"index": 0, "text": ""}]}, "no 'prompt_logprobs'"),
        ({"prompt_token_ids": ids, "outputs": []}, "no 'prompt_logprobs'"),
        ({**ok, "sample_id": "0"}, "'sample_id': must be a non-negative integer"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_malformed_lines_stop_naming_file_and_line(tmp_path, setup, case):
    ds, rows, V, _, _ = setup
    obj, match = _broken(rows[0], V)[case]
    src = _write(tmp_path / "a.jsonl", [request_output(rows[1], V), obj])
    with pytest.raises(InputFormatError, match=rf"a\.jsonl line 2.*{match}"):
        import_from_config(_cfg(tmp_path, src, ds))


def test_resume_after_a_malformed_file_imports_every_rollout_once(tmp_path, setup):
    ds, rows, V, _, _ = setup
    lines = [request_output(r, V) for r in rows]
    _write(tmp_path / "v" / "a.jsonl", lines[:4])
    _write(tmp_path / "v" / "b.jsonl", lines[4:7])
    c = _write(tmp_path / "v" / "c.jsonl", [lines[2], *lines[7:]])  # repeats a line of a.jsonl
    c.write_text(json.dumps(lines[7])[:50] + "\n" + c.read_text())  # a cut-off line first
    with pytest.raises(InputFormatError, match=r"c\.jsonl: line 1: not valid JSON"):
        import_from_config(_cfg(tmp_path, tmp_path / "v", ds, part_size=2))
    _write(c, [lines[2], *lines[7:]])
    cfg = _cfg(tmp_path, tmp_path / "v", ds, part_size=2, if_exists="resume")
    plan = open_source(cfg)
    out = run_import(plan, cfg)  # a and b are skipped, yet re-read: the repeat in c is not imported twice
    keys = [(r["prompt_id"], r["sample_id"]) for r in out.read("rollouts").to_pylist()]
    assert len(keys) == len(rows) == len(set(keys)) and out.manifest["status"] == "complete"
    assert plan.notes["duplicate_lines"] == 1 and plan.notes["rollouts_dropped_unscored"] == 0


def test_temperature_other_than_one_is_refused(tmp_path, setup):
    ds, rows, V, _, _ = setup
    src = _write(tmp_path / "a.jsonl", [request_output(rows[0], V)])
    with pytest.raises(InputFormatError, match="always at temperature 1"):
        import_from_config(_cfg(tmp_path, src, ds, temperature=0.7))


def test_an_imported_dataset_keeps_its_sampler_logprobs_and_loss_mask(tmp_path, setup):
    from transformers import AutoModelForCausalLM

    _, _, V, s_path, _ = setup
    S, T = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (s_path, s_path.parent / "teacher"))
    made = make_rollouts(S, T, np.random.default_rng(3), n_prompts=3, samples=2)
    recs = [{"prompt_ids": r.prompt_ids, "response_ids": r.response_ids, "student_logprobs": r.student_lp.tolist(),
             "teacher_logprobs": r.teacher_lp.tolist(), "rollout_logprobs": r.rollout_lp.tolist(), "step": 4,
             "prompt_id": r.prompt_id, "loss_mask": [int(j % 3 != 1) for j in range(len(r.response_ids))]}
            for r in made]
    src = _write(tmp_path / "tok.jsonl", recs)
    base = import_from_config(ImportConfig(source="tokens", path=str(src), out=str(tmp_path / "base"),
                                           scoring=ScoringOptions(progress=False)))
    rows = base.read("rollouts").to_pylist()
    vsrc = _write(tmp_path / "v.jsonl", [completion(r, V) for r in rows])
    out = import_from_config(_cfg(tmp_path, vsrc, base))
    old, new = _by_rollout(base), _by_rollout(out)
    assert set(old) == set(new)
    for key, t in new.items():
        o = old[key]
        np.testing.assert_array_equal(t.rollout_logprob, o.rollout_logprob)
        np.testing.assert_array_equal(t.loss_mask, o.loss_mask)
        assert (t.prompt_key == o.prompt_key).all() and (t.step == 4).all()
    assert not (np.concatenate([t.loss_mask for t in new.values()])).all()


def test_cli_imports_and_reports_a_bad_line_in_one_line(tmp_path, setup, capsys):
    from drift.cli import main

    ds, rows, V, _, _ = setup
    src = _write(tmp_path / "a.jsonl", [completion(r, V) for r in rows])
    out = tmp_path / "out"
    assert main(["import", "vllm", str(src), "--rollouts", str(ds.root), "--out", str(out)]) == 0
    assert f"imported {len(rows)} rollouts" in capsys.readouterr().out
    bad = request_output(rows[0], V)
    bad["prompt_logprobs"] = bad["prompt_logprobs"][1:]
    _write(src, [bad])
    assert main(["import", "vllm", str(src), "--rollouts", str(ds.root), "--out", str(tmp_path / "o2")]) == 2
    assert "a.jsonl line 1" in capsys.readouterr().err


def test_teacher_check_scores_the_teachers_own_prompt(tmp_path, setup):
    ds, rows, V, _, v_path = setup
    chat = [r for r in rows if r["prompt_id"] == "chat"]
    src = _write(tmp_path / "a.jsonl", [request_output(r, V, k=-1) for r in chat])
    out = import_from_config(_cfg(tmp_path, src, ds, teacher=str(v_path)))
    assert json.loads((out.root / "config.json").read_text())["checks"]["teacher"]["verdict"] == "ok"
