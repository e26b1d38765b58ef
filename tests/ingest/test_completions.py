"""``drift import completions``: TRL / verl / ms-swift text dumps written in each trainer's real layout, imported,
re-tokenized and re-scored; the scored log-probs must equal the tiny models' log-probs of the ids the trainer fed.

The dumps are made as the trainers make them: the prompt ids are rendered first (chat template for conversational
prompts, BOS for TRL's plain text), then decoded the way each trainer decodes (TRL and verl
``skip_special_tokens=True``, ms-swift keeps special tokens and strips the stop token), so the import must restore
what the decoding lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drift.collect.config import ScoringOptions
from drift.errors import InputFormatError, TokenizerWarning
from drift.ingest import ImportConfig, import_from_config
from drift.ingest.checks import sampled_logprobs
from drift.ingest.completions import find_files
from drift.store import open_dataset
from tests.helpers import make_tiny_tokenizer
from tests.ingest.fixtures import save_tiny_pair

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

EOS = 2


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    s_path, t_path = save_tiny_pair(tmp_path_factory.mktemp("models"))
    return (s_path, t_path, AutoModelForCausalLM.from_pretrained(s_path).eval(),
            AutoModelForCausalLM.from_pretrained(t_path).eval())


TOK = make_tiny_tokenizer()


def words(rng: np.random.Generator, n: int) -> str:
    return " ".join(f"w{int(i)}" for i in rng.integers(0, 96, size=n))


def chat_ids(messages: list[dict[str, str]]) -> list[int]:
    text = TOK.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(TOK(text, add_special_tokens=False)["input_ids"])


def sample(rng: np.random.Generator, prompt_ids: list[int]) -> dict:
    """One finished sample: the ids the trainer fed and sampled (EOS included) and the two texts it logs."""
    resp = [*TOK(words(rng, int(rng.integers(2, 7))), add_special_tokens=False)["input_ids"], EOS]
    return {"prompt_ids": prompt_ids, "response_ids": resp,
            "prompt": TOK.decode(prompt_ids, skip_special_tokens=True),
            "completion": TOK.decode(resp, skip_special_tokens=True)}


def run_import(tmp_path: Path, pair, path: Path, fmt: str, **kw):
    s_path, t_path, _, _ = pair
    out = tmp_path / f"out-{fmt}-{len(list(tmp_path.iterdir()))}"
    cfg = ImportConfig(source="completions", path=str(path), out=str(out), format=fmt, student=str(s_path),
                       teacher=str(t_path), part_size=kw.pop("part_size", 4),
                       scoring=ScoringOptions(progress=False, num_threads=1, chunk_size=8), **kw)
    return import_from_config(cfg)


def check_scores(ds, pair, expected: list[dict]) -> pd.DataFrame:
    """Rollouts in ``expected`` order hold exactly its ids; per-token log-probs equal the models' (float32)."""
    _, _, student, teacher = pair
    ro = ds.read("rollouts").to_pandas().sort_values(["step", "prompt_id", "sample_id"])
    tok = ds.read("tokens").to_pandas()
    assert len(ro) == len(expected)
    got = {(tuple(r.student_prompt_ids), tuple(r.response_ids)) for r in ro.itertuples()}
    assert got == {(tuple(e["prompt_ids"]), tuple(e["response_ids"])) for e in expected}
    for r in ro.itertuples():
        t = tok[(tok.prompt_id == r.prompt_id) & (tok.sample_id == r.sample_id) & (tok.step == r.step)]
        t = t.sort_values("position")
        assert list(t.token_id) == list(r.response_ids)
        for model, col in ((student, "student_logprob"), (teacher, "teacher_logprob")):
            want = sampled_logprobs(model, [list(r.student_prompt_ids)], [list(r.response_ids)])[0]
            np.testing.assert_allclose(t[col].to_numpy(), want, rtol=1e-5, atol=1e-5)
    assert ds.metadata["support"] == "full"
    return ro


def test_trl_conversational_repeats_imported_once(tmp_path, pair):
    """Rendered chat prompts lose their special tokens; the uncleared buffer logs rows again in the next file."""
    rng = np.random.default_rng(0)
    convs = [[{"role": "user", "content": words(rng, 3)}],
             [{"role": "system", "content": words(rng, 2)}, {"role": "user", "content": words(rng, 2)}],
             [{"role": "user", "content": words(rng, 2)}, {"role": "assistant", "content": words(rng, 2)},
              {"role": "user", "content": words(rng, 3)}]]
    first = [sample(rng, chat_ids(c)) for c in convs for _ in range(2)]
    first.append(dict(first[-1]))  # the same completion sampled twice for one prompt: two samples, kept both
    second = [sample(rng, chat_ids(convs[0])) for _ in range(3)]
    step_rows = {1: first, 2: first[3:] + second}  # deque(maxlen=7): file 2 repeats first[3:]
    folder = tmp_path / "run" / "completions"
    folder.mkdir(parents=True)
    adv = {id(s): float(rng.normal()) for s in first + second}
    adv[id(first[-1])] = adv[id(first[-2])]
    for step, rows in step_rows.items():
        pd.DataFrame({"step": [step] * len(rows), "prompt": [s["prompt"] for s in rows],
                      "completion": [s["completion"] for s in rows],
                      "accuracy_reward": [1.0] * len(rows), "format_reward": [0.5] * len(rows),
                      "advantage": [adv[id(s)] for s in rows]}
                     ).to_parquet(folder / f"completions_{step:05d}.parquet")
    assert "<user>" in first[0]["prompt"] and "</s>" not in first[0]["prompt"]

    ds = run_import(tmp_path, pair, tmp_path / "run", "trl")
    ro = check_scores(ds, pair, first + second)
    steps = {tuple(r.student_prompt_ids): r.step for r in ro.itertuples()}
    assert all(steps[tuple(s["prompt_ids"])] == 1 for s in first[2:6])
    assert sorted(ro.step) == [1] * 7 + [2] * 3
    assert ro.reward.tolist() == [1.5] * 10
    # several completions of one prompt share its key (also across steps); distinct prompts do not
    keys = ro.groupby(ro.student_prompt_ids.map(tuple)).prompt_key.nunique()
    assert (keys == 1).all() and ro.prompt_key.nunique() == 3
    assert ro.finished.all() and ro.response_ids.map(lambda r: r[-1] == EOS).all()
    cfg = ds.config
    assert cfg["command"] == "import" and cfg["config_type"] == "ImportConfig"
    assert cfg["config"]["format"] == "trl"
    src = cfg["source"]
    assert src["format"] == "trl" and src["files"] == ["completions/completions_00001.parquet",
                                                       "completions/completions_00002.parquet"]
    assert src["repeats_dropped"] == 4 and src["rollouts"] == 10
    assert src["template"]["counts"] == {"restored": 10}
    assert src["template"]["prompt_roundtrip"]["ok"] == src["template"]["prompt_roundtrip"]["checked"]
    assert src["template"]["completion_end"]["turn_end"] == "</s>"
    assert ds.metadata["source_format"] == "trl"


def test_trl_plain_text_and_message_prompts(tmp_path, pair):
    """Plain-text TRL prompts are encoded with BOS and no template (as TRL does); message lists are rendered."""
    rng = np.random.default_rng(1)
    texts = [words(rng, 3), words(rng, 4)]
    plain = [sample(rng, list(TOK(t)["input_ids"])) for t in texts for _ in range(2)]
    (tmp_path / "plain").mkdir()
    pd.DataFrame({"step": [5] * 4, "prompt": [s["prompt"] for s in plain],
                  "completion": [s["completion"] for s in plain], "advantage": [0.0] * 4}
                 ).to_parquet(tmp_path / "plain" / "completions_00005.parquet")
    ds = run_import(tmp_path, pair, tmp_path / "plain" / "completions_00005.parquet", "trl")
    ro = check_scores(ds, pair, plain)
    assert ds.config["source"]["template"]["counts"] == {"raw": 4} and set(ro.step) == {5}
    assert ro.reward.isna().all()

    msgs = [[{"role": "user", "content": words(rng, 3)}], [{"role": "user", "content": words(rng, 2)}]]
    chats = [sample(rng, chat_ids(m)) for m in msgs]
    (tmp_path / "msgs").mkdir()
    pd.DataFrame({"step": [3, 3], "prompt": msgs, "completion": [s["completion"] for s in chats],
                  "reward": [1.0, 0.0], "advantage": [1.0, -1.0]}
                 ).to_parquet(tmp_path / "msgs" / "completions_00003.parquet")
    ds = run_import(tmp_path, pair, tmp_path / "msgs", "trl")
    ro = check_scores(ds, pair, chats)
    assert ds.config["source"]["template"]["counts"] == {"messages": 2}
    assert json.loads(ro.source_prompt.iloc[0]) in msgs


def _verl_line(s: dict, step: int, **extra) -> str:
    """A verl dump line: the left-padded prompt and right-padded response decoded with skip_special_tokens=True."""
    pad = [TOK.pad_token_id] * 3
    return json.dumps({"input": TOK.decode(pad + s["prompt_ids"], skip_special_tokens=True),
                       "output": TOK.decode(s["response_ids"] + pad, skip_special_tokens=True), "gts": "42",
                       "score": 1.0, "step": step, **extra})


def test_verl_v1_uid_and_request_id(tmp_path, pair):
    """v1 ``uid`` = {prompt uid}_{session}_{index} groups a prompt's samples; older ``request_id`` is per sample."""
    rng = np.random.default_rng(2)
    convs = [[{"role": "user", "content": words(rng, 3)}], [{"role": "user", "content": words(rng, 3)}]]
    v1 = tmp_path / "v1" / "rollout_data"
    v1.mkdir(parents=True)
    expected = []
    for step in (1, 2):
        lines = []
        for c, puid in zip(convs, ("a7f3", "b2c9"), strict=True):
            for session in range(2):
                s = sample(rng, chat_ids(c))
                expected.append(s)
                lines.append(_verl_line(s, step, uid=f"{puid}_{session}_0", acc=0.5))
        (v1 / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    ds = run_import(tmp_path, pair, tmp_path / "v1", "verl")  # the parent of rollout_data_dir
    ro = check_scores(ds, pair, expected)
    assert sorted(ro.step) == [1] * 4 + [2] * 4
    assert sorted(ro.prompt_key.unique()) == [f"{ds.metadata['run_id']}/id:{u}" for u in ("a7f3", "b2c9")]
    assert set(ro.prompt_id) == {"a7f3", "b2c9"} and sorted(ro.sample_id) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (ro.answer == "42").all() and (ro.reward == 1.0).all()
    assert ds.config["source"]["template"]["counts"] == {"restored": 8}

    old = tmp_path / "old"
    old.mkdir()
    plain = words(rng, 2)  # text without the template: wrapped as one user turn
    same = [sample(rng, chat_ids(convs[0])) for _ in range(2)]
    wrapped = sample(rng, chat_ids([{"role": "user", "content": plain}]))
    lines = [_verl_line(s, 7, request_id=f"req-{i}") for i, s in enumerate(same)]
    lines.append(json.dumps({"input": plain, "output": wrapped["completion"], "gts": None, "score": 0.0, "step": 7,
                             "request_id": "req-9"}))
    (old / "7.jsonl").write_text("\n".join(lines) + "\n")
    ds = run_import(tmp_path, pair, old, "verl")
    ro = check_scores(ds, pair, [*same, wrapped])
    assert ro.prompt_key.nunique() == 2 and ro.prompt_key.str.contains("/ids:").all()
    assert ds.config["source"]["template"]["counts"] == {"restored": 2, "user_turn": 1}


def test_unrestorable_prompt_is_kept_as_is_with_a_warning(tmp_path, pair):
    """A conversation longer than the parsed shapes cannot be restored: tokenized as is, counted and warned."""
    rng = np.random.default_rng(5)
    roles = ["user", "assistant"] * 3 + ["user"]
    long = sample(rng, chat_ids([{"role": r, "content": words(rng, 2)} for r in roles]))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.jsonl").write_text(_verl_line(long, 1) + "\n")
    with pytest.warns(TokenizerWarning, match="kept the template without its special tokens"):
        ds = run_import(tmp_path, pair, tmp_path / "d", "verl")
    ro = ds.read("rollouts").to_pandas()
    assert ds.config["source"]["template"]["counts"] == {"as_is": 1}
    assert list(ro.student_prompt_ids[0]) == TOK(long["prompt"], add_special_tokens=False)["input_ids"]


def test_swift_list_valued_lines(tmp_path, pair):
    """GRPO lines hold lists over the uncleared deque (repeats dropped); prompts keep special tokens; step is str."""
    rng = np.random.default_rng(3)
    convs = [[{"role": "system", "content": words(rng, 2)}, {"role": "user", "content": words(rng, 3)}],
             [{"role": "user", "content": words(rng, 2)}]]
    samples = [sample(rng, chat_ids(c)) for c in convs for _ in range(3)]
    for s in samples:  # swift: safe_decode keeps special tokens; the response's stop token is stripped
        s["prompt"] = TOK.decode(s["prompt_ids"])
        s["completion"] = TOK.decode(s["response_ids"][:-1])
    lines = {10: samples[:4], 11: samples[2:]}  # deque(maxlen=4)
    out = tmp_path / "output" / "v0-20260101"
    out.mkdir(parents=True)
    with open(out / "completions.jsonl", "w") as fh:
        for step, rows in lines.items():
            fh.write(json.dumps({"step": [str(step)] * len(rows), "prompt": [s["prompt"] for s in rows],
                                 "completion": [s["completion"] for s in rows], "accuracy": [1.0] * len(rows),
                                 "format": [0.0] * len(rows), "advantages": [0.1 * samples.index(s) for s in rows],
                                 "entropy": [0.5] * len(rows)}) + "\n")
    assert "</s>" in samples[0]["prompt"]
    ds = run_import(tmp_path, pair, tmp_path / "output", "swift")
    ro = check_scores(ds, pair, samples)
    assert sorted(ro.step) == [10] * 4 + [11] * 2
    assert ds.config["source"]["template"]["counts"] == {"as_is": 6}
    assert ds.config["source"]["repeats_dropped"] == 2 and (ro.reward == 1.0).all()

    # GKD clears its buffer after each line: a repeated row is a new sample
    gkd = tmp_path / "gkd.jsonl"
    row = {"step": ["1"], "prompt": [samples[0]["prompt"]], "completion": [samples[0]["completion"]]}
    gkd.write_text(json.dumps(row) + "\n" + json.dumps({**row, "step": ["2"]}) + "\n")
    ds = run_import(tmp_path, pair, gkd, "swift")
    assert sorted(ds.read("rollouts").column("step").to_pylist()) == [1, 2]


def test_cli_import_and_resume(tmp_path, pair):
    from drift.cli import main

    rng = np.random.default_rng(4)
    s = [sample(rng, chat_ids([{"role": "user", "content": words(rng, 3)}])) for _ in range(5)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "3.jsonl").write_text("\n".join(_verl_line(x, 3) for x in s) + "\n")
    out = tmp_path / "cli-out"
    args = ["import", "completions", str(tmp_path / "d"), "--format", "verl", "--student", str(pair[0]),
            "--teacher", str(pair[1]), "--out", str(out), "--part-size", "2", "--progress", "false",
            "--num-threads", "1"]
    assert main(args) == 0
    assert main([*args, "--if-exists", "resume"]) == 0
    check_scores(open_dataset(out), pair, s)


def _trl_file(path: Path, **cols) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": [1, 1], "prompt": ["w1 w2", "w3"], "completion": ["w4", "w5"], "advantage": [0.0, 0.0],
                  **cols}).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt,name,content,match", [
    ("trl", "completions_00001.parquet", None, r"missing column\(s\) \['completion'\]"),
    ("trl", "completions_00001.parquet", "row", r"completions_00001.parquet row 1 'completion': must be a string"),
    ("trl", "completions_00001.parquet", b"PAR1 broken", "not a readable parquet file"),
    ("verl", "4.jsonl", '{"input": "w1", "output": "w2", "step": 4}\n{"input": "w1", "out',
     r"(?s)4.jsonl: .*line 2: not valid JSON"),
    ("verl", "4.jsonl", '{"output": "w2", "step": 4}\n', r"4.jsonl line 1: missing or non-text \['input'\]"),
    ("verl", "4.jsonl", '{"input": "w1", "output": "w2", "step": -3}\n', r"4.jsonl line 1 'step': must be a non-neg"),
    ("swift", "completions.jsonl", '{"step": ["1", "1"], "prompt": ["w1", "w2"], "completion": ["w3"]}\n',
     r"completions.jsonl line 1: needs equal-length lists .* lists \['completion'\] do not have the 2"),
    ("swift", "completions.jsonl", '{"step": ["x"], "prompt": ["w1"], "completion": ["w3"]}\n',
     r"line 1 entry 0 'step': must be a non-negative integer"),
])
def test_malformed_files_name_file_and_row(tmp_path, fmt, name, content, match):
    path = tmp_path / "dump" / name
    if fmt == "trl" and content is None:
        _trl_file(path).write_bytes(b"")
        pd.DataFrame({"step": [1], "prompt": ["w1"]}).to_parquet(path)
    elif fmt == "trl" and content == "row":
        _trl_file(path, completion=["w4", None])
    else:
        path.parent.mkdir(parents=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    cfg = ImportConfig(source="completions", path=str(tmp_path / "dump"), out=str(tmp_path / "o"), format=fmt,
                       student="missing-s", teacher="missing-t")
    with pytest.raises(InputFormatError, match=match):  # raised before any model is loaded
        import_from_config(cfg)
    assert not (tmp_path / "o").exists()


def test_find_files_layouts(tmp_path):
    for d in ("a", "b"):
        (tmp_path / "verl" / d).mkdir(parents=True)
        (tmp_path / "verl" / d / "1.jsonl").write_text("")
    with pytest.raises(InputFormatError, match="several folders of verl step files"):
        find_files(tmp_path / "verl", "verl")
    for step in (10, 2):
        (tmp_path / "verl" / "a" / f"{step}.jsonl").write_text("")
    assert [f.name for f in find_files(tmp_path / "verl" / "a", "verl")] == ["1.jsonl", "2.jsonl", "10.jsonl"]
    with pytest.raises(InputFormatError, match=r"no trl files found \(expected output_dir/completions/"):
        find_files(tmp_path / "verl", "trl")
    with pytest.raises(InputFormatError, match=r"a swift dump is a \.jsonl file"):
        find_files(_trl_file(tmp_path / "x.parquet"), "swift")
