"""Bad inputs across every command: exit code 2, a typed error, an actionable message, and no data touched.

Each case runs the real CLI (``drift.cli.main``) in-process. A module-scoped workspace holds a small collected
dataset (the toy preset), a tiny chat model and input files; every case checks that no file in it changed and,
where the command failed before writing, that its ``--out`` was not left behind. The README's "When something
goes wrong" table lists these cases and their messages.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from drift.cli import main

pytestmark = [pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning"),
              pytest.mark.filterwarnings("ignore::drift.errors.TokenizerWarning")]

ORACLE = Path(__file__).resolve().parents[1] / "data" / "oracle"
NO_PROGRESS = ["--progress", "false"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace: a toy dataset, a tiny chat model (with template), a tiny model with a too-wide head."""
    from tests.helpers import make_tiny_model, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs")
    toy = root / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(toy), "--max-prompts", "3", "--samples-per-prompt",
                 "2", "--part-size", "2", *NO_PROGRESS]) == 0
    tok = make_tiny_tokenizer()
    chat = root / "chat_model"
    make_tiny_model(0).save_pretrained(chat)
    tok.save_pretrained(chat)
    wide = root / "wide_head"
    make_tiny_model(1, vocab_size=len(tok) + 2000).save_pretrained(wide)  # 2103 rows for 103 tokens
    tok.save_pretrained(wide)
    short = root / "short_context"
    m = make_tiny_model(2)
    m.config.max_position_embeddings = 16
    m.save_pretrained(short)
    tok.save_pretrained(short)
    (root / "prompts.jsonl").write_text(json.dumps({"id": "a", "prompt": "w1 w2 w3"}) + "\n")
    (root / "chat_prompts.jsonl").write_text(json.dumps({"id": "c", "prompt": [{"role": "user", "content": "w1"}]})
                                             + "\n")
    (root / "empty_prompt.jsonl").write_text(json.dumps({"id": "e", "prompt": "  "}) + "\n")
    (root / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    (root / "broken.jsonl").write_text('{"prompt": "w1"}\n{oops\n')
    (root / "long_prompt.jsonl").write_text(json.dumps({"id": "long", "prompt": " ".join(["w5"] * 40)}) + "\n")
    (root / "oracle_long.jsonl").write_text(json.dumps({"id": "long", "prompt": " ".join(["i01"] * 90)}) + "\n")
    (root / "rollouts_bad.jsonl").write_text('{"prompt": "w1"}\n')  # no response
    (root / "rollouts_long.jsonl").write_text(json.dumps({"prompt": "w1", "response": " ".join(["w3"] * 30)})
                                              + "\n")
    (root / "tokens_bad.jsonl").write_text(json.dumps({"prompt_ids": [1, 7], "response_ids": [8, 9],
                                                       "student_logprobs": [-1.0]}) + "\n")
    (root / "evil.pt").write_bytes(_pickled_object())
    _token_logs(root, make_tiny_model(0))
    (root / "slime_dump" / "train_data").mkdir(parents=True)
    (root / "slime_dump" / "train_data" / "0.pt").write_bytes(b"PK\x03\x04 cut off")
    (root / "prompt_dir").mkdir()
    (root / "a_file").write_text("not a folder\n")
    (root / "bad_schedule.json").write_text('{"kind": "no_such_kind"}\n')
    # damaged copies of the toy dataset: a truncated tokens part, a part without a column
    trunc = root / "toy_truncated"
    shutil.copytree(toy, trunc)
    part = sorted((trunc / "tokens").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    dropped = root / "toy_dropped"
    shutil.copytree(toy, dropped)
    import pyarrow.parquet as pq

    part = sorted((dropped / "tokens").glob("part-*.parquet"))[0]
    pq.write_table(pq.read_table(part).drop_columns(["kl_reverse"]), part)
    return root


def _pickled_object() -> bytes:
    """A torch.save file holding an object a safe load refuses (as a malicious dump would)."""
    import io
    from fractions import Fraction

    import torch

    buf = io.BytesIO()
    torch.save({"samples": [Fraction(1, 3)]}, buf)
    return buf.getvalue()


def _token_logs(root: Path, model) -> None:
    """Generic token records scored by ``model`` (the chat model): aligned, shifted by one token, and imported."""
    from drift.ingest.checks import sampled_logprobs

    good, shifted = [], []
    for p in range(12):
        prompt, resp = [1, 7 + p, 20 + p], [30 + p, 40 + p, 50 + p, 60 + p, 2]
        lp = sampled_logprobs(model, [prompt], [resp])[0].tolist()
        rec = {"prompt_ids": prompt, "response_ids": resp, "teacher_logprobs": [x - 0.3 for x in lp]}
        good.append({**rec, "student_logprobs": lp})
        shifted.append({**rec, "student_logprobs": [*lp[1:], -1.0]})
    for name, recs in (("tokens_good.jsonl", good), ("tokens_shifted.jsonl", shifted)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["import", "tokens", str(root / "tokens_good.jsonl"), "--out", str(root / "imported"),
                 *NO_PROGRESS]) == 0


def _fail(ws: Path, capsys, argv: list[str], error: str, phrase: str, *, out: Path | None = None) -> str:
    """Run ``argv``; assert exit 2, the error type, the phrase, no traceback, nothing changed, no --out left."""
    before = _snapshot(ws)
    existed = out is not None and out.exists()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    found = re.search(r"error \((\w+)\)", err)
    assert found and found.group(1) == error, err
    assert phrase.lower() in err.lower(), err
    assert _snapshot(ws) == before, "a failing command changed data already written"
    if out is not None and not existed:
        assert not out.exists(), f"a failed run left {out} behind"
    return err


def _collect(ws: Path, *extra: str, student: Path | str | None = None, teacher: Path | str | None = None,
             prompts: str = "prompts.jsonl", out: str = "new_out") -> list[str]:
    s = str(student or ws / "chat_model")
    t = str(teacher or student or ws / "chat_model")
    return ["collect", "--student", s, "--teacher", t, "--prompts", str(ws / prompts), "--out", str(ws / out),
            "--max-new-tokens", "4", *NO_PROGRESS, *extra]


# ---------------------------------------------------------------------------------------------------- collect

def test_prompts_is_a_folder(ws, capsys):
    _fail(ws, capsys, _collect(ws, prompts="prompt_dir"), "InputFormatError", "is a folder", out=ws / "new_out")


def test_prompts_not_utf8(ws, capsys):
    _fail(ws, capsys, _collect(ws, prompts="latin1.jsonl"), "InputFormatError", "not UTF-8", out=ws / "new_out")


def test_prompts_missing(ws, capsys):
    _fail(ws, capsys, _collect(ws, prompts="nope.jsonl"), "InputFormatError", "does not exist", out=ws / "new_out")


def test_prompt_empty(ws, capsys):
    _fail(ws, capsys, _collect(ws, prompts="empty_prompt.jsonl"), "InputFormatError", "is empty",
          out=ws / "new_out")


def test_prompts_malformed_line(ws, capsys):
    _fail(ws, capsys, _collect(ws, prompts="broken.jsonl"), "InputFormatError", "line 2: not valid JSON",
          out=ws / "new_out")


def test_out_is_an_existing_file(ws, capsys):
    _fail(ws, capsys, _collect(ws, out="a_file"), "DatasetExistsError", "is an existing file")


def test_out_exists(ws, capsys):
    _fail(ws, capsys, _collect(ws, out="toy"), "DatasetExistsError", "--if-exists resume")


def test_device_unknown(ws, capsys):
    _fail(ws, capsys, _collect(ws, "--device", "tpu7"), "DeviceError", "not a device", out=ws / "new_out")


def test_device_cuda_without_cuda(ws, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fail(ws, capsys, _collect(ws, "--device", "cuda"), "DeviceError", "CUDA is not available", out=ws / "new_out")


def test_model_path_missing(ws, capsys):
    _fail(ws, capsys, _collect(ws, student=ws / "nope"), "ModelLoadError", "does not exist", out=ws / "new_out")


def test_prompt_longer_than_context(ws, capsys):
    err = _fail(ws, capsys, _collect(ws, student=ws / "short_context", prompts="long_prompt.jsonl"),
                "PromptTooLongError", "context of 16 tokens", out=ws / "new_out")
    assert "--truncate-prompt left" in err


def test_oracle_prompt_beyond_context(ws, capsys):
    argv = ["collect", "--student", str(ORACLE / "student"), "--teacher", str(ORACLE / "teacher"), "--prompts",
            str(ws / "oracle_long.jsonl"), "--out", str(ws / "new_out"), "--max-new-tokens", "64", *NO_PROGRESS]
    _fail(ws, capsys, argv, "PromptTooLongError", "context of 128 tokens", out=ws / "new_out")


def test_chat_template_always_without_template(ws, capsys):
    argv = ["collect", "--preset", "toy", "--out", str(ws / "new_out"), "--max-prompts", "1", "--chat-template",
            "always", *NO_PROGRESS]
    _fail(ws, capsys, argv, "ChatTemplateError", "no chat template", out=ws / "new_out")


def test_chat_messages_with_template_never(ws, capsys):
    _fail(ws, capsys, _collect(ws, "--chat-template", "never", prompts="chat_prompts.jsonl"), "ChatTemplateError",
          "--chat-template never", out=ws / "new_out")


def test_tokenizer_override_with_another_vocabulary(ws, capsys):
    err = _fail(ws, capsys, _collect(ws, "--tokenizer", str(ORACLE / "tokenizer")), "TokenizerMismatchError",
                "tokenizers differ", out=ws / "new_out")
    assert "--tokenizer" not in err.split("error (")[1].split("tokenizers differ")[1]  # never suggests the flag


def test_head_wider_than_vocabulary_padding(ws, capsys):
    _fail(ws, capsys, _collect(ws, teacher=ws / "wide_head", student=ws / "chat_model"), "TokenizerMismatchError",
          "more than vocabulary padding", out=ws / "new_out")


def test_samples_per_prompt_zero(ws, capsys):
    _fail(ws, capsys, _collect(ws, "--samples-per-prompt", "0"), "ConfigError", "samples_per_prompt",
          out=ws / "new_out")


def test_negative_temperature(ws, capsys):
    _fail(ws, capsys, _collect(ws, "--temperature", "-1"), "ConfigError", "temperature must be >= 0",
          out=ws / "new_out")


def test_resume_with_another_configuration(ws, capsys):
    argv = ["collect", "--preset", "toy", "--out", str(ws / "toy"), "--max-prompts", "3", "--samples-per-prompt",
            "2", "--part-size", "2", "--seed", "7", "--if-exists", "resume", *NO_PROGRESS]
    _fail(ws, capsys, argv, "DatasetError", "different configuration")


# ------------------------------------------------------------------------------------------------------ score

def _score(ws: Path, rollouts: str, model: Path, *extra: str) -> list[str]:
    return ["score", "--rollouts", str(ws / rollouts), "--student", str(model), "--teacher", str(model), "--out",
            str(ws / "new_out"), *NO_PROGRESS, *extra]


def test_score_with_a_foreign_tokenizer(ws, capsys):
    _fail(ws, capsys, _score(ws, "toy", ws / "chat_model"), "TokenizerMismatchError", "vocabulary hash",
          out=ws / "new_out")


def test_score_rollouts_missing(ws, capsys):
    _fail(ws, capsys, _score(ws, "nope.jsonl", ws / "chat_model"), "InputFormatError", "does not exist",
          out=ws / "new_out")


def test_score_jsonl_malformed(ws, capsys):
    _fail(ws, capsys, _score(ws, "rollouts_bad.jsonl", ws / "chat_model"), "InputFormatError",
          "needs either 'prompt' + 'response'", out=ws / "new_out")


def test_score_response_beyond_context(ws, capsys):
    _fail(ws, capsys, _score(ws, "rollouts_long.jsonl", ws / "short_context"), "PromptTooLongError",
          "context of 16 tokens", out=ws / "new_out")


# ----------------------------------------------------------------------------------------------------- import

def test_import_path_missing(ws, capsys):
    _fail(ws, capsys, ["import", "tokens", str(ws / "nope.jsonl"), "--out", str(ws / "new_out"), *NO_PROGRESS],
          "InputFormatError", "does not exist", out=ws / "new_out")


def test_import_misaligned_logprobs(ws, capsys):
    _fail(ws, capsys, ["import", "tokens", str(ws / "tokens_bad.jsonl"), "--out", str(ws / "new_out"),
                       *NO_PROGRESS], "InputFormatError", "line 1: 'student_logprobs' has 1 entries",
          out=ws / "new_out")


def test_import_completions_without_models(ws, capsys):
    _fail(ws, capsys, ["import", "completions", str(ws / "prompt_dir"), "--out", str(ws / "new_out")],
          "ConfigError", "--format trl, verl or swift", out=ws / "new_out")


def test_import_flag_of_another_source(ws, capsys):
    _fail(ws, capsys, ["import", "tokens", str(ws / "tokens_bad.jsonl"), "--advantages", "distillation", "--out",
                       str(ws / "new_out")], "ConfigError", "--advantages is for `drift import nemo-rl`",
          out=ws / "new_out")


def test_import_pickle_needs_consent(ws, capsys):
    from fractions import Fraction

    from drift.errors import InputFormatError
    from drift.ingest.torchload import load_pt

    with pytest.raises(InputFormatError, match="--allow-pickle"):
        load_pt(ws / "evil.pt")
    assert load_pt(ws / "evil.pt", allow_pickle=True)["samples"][0] == Fraction(1, 3)


def test_import_logprobs_shifted_by_one(ws, capsys):
    _fail(ws, capsys, ["import", "tokens", str(ws / "tokens_shifted.jsonl"), "--student", str(ws / "chat_model"),
                       "--out", str(ws / "new_out"), *NO_PROGRESS], "AlignmentError", "shifted by one token",
          out=ws / "new_out")


def test_fit_full_vocab_metric_on_a_sampled_import(ws, capsys):
    _fail(ws, capsys, ["fit", str(ws / "imported"), "--metric", "kl_reverse", "--out", str(ws / "new_out")],
          "SchemaError", "needs full-vocabulary scoring", out=ws / "new_out")


def test_import_truncated_pt(ws, capsys):
    _fail(ws, capsys, ["import", "slime", str(ws / "slime_dump"), "--out", str(ws / "new_out"), *NO_PROGRESS],
          "InputFormatError", "0.pt", out=ws / "new_out")


# ------------------------------------------------------------------------------------------------------ probe

def test_probe_not_a_dataset(ws, capsys):
    _fail(ws, capsys, ["probe", str(ws / "prompt_dir"), "--out", str(ws / "new_out"), *NO_PROGRESS],
          "DatasetError", "not a drift dataset", out=ws / "new_out")


def test_probe_out_is_a_file(ws, capsys):
    _fail(ws, capsys, ["probe", str(ws / "toy"), "--out", str(ws / "a_file"), *NO_PROGRESS], "DatasetExistsError",
          "is an existing file")


def test_probe_with_a_foreign_tokenizer(ws, capsys):
    argv = ["probe", str(ws / "toy"), "--student", str(ws / "chat_model"), "--teacher", str(ws / "chat_model"),
            "--out", str(ws / "new_out"), *NO_PROGRESS]
    _fail(ws, capsys, argv, "TokenizerMismatchError", "vocabulary hash", out=ws / "new_out")


# -------------------------------------------------------------------------------------------------------- fit

def _fit(ws: Path, dataset: str, metric: str = "kl_reverse") -> list[str]:
    return ["fit", str(ws / dataset), "--metric", metric, "--out", str(ws / "new_out")]


def test_fit_not_a_dataset(ws, capsys):
    _fail(ws, capsys, _fit(ws, "prompt_dir"), "DatasetError", "not a drift dataset", out=ws / "new_out")


def test_fit_string_metric(ws, capsys):
    _fail(ws, capsys, _fit(ws, "toy", "run_id"), "SchemaError", "run_id", out=ws / "new_out")


def test_fit_truncated_part(ws, capsys):
    err = _fail(ws, capsys, _fit(ws, "toy_truncated"), "DamagedPartError", "part-00000.parquet",
                out=ws / "new_out")
    assert "--if-exists resume" in err


def test_fit_part_missing_a_column(ws, capsys):
    err = _fail(ws, capsys, _fit(ws, "toy_dropped"), "DamagedPartError", "kl_reverse", out=ws / "new_out")
    assert "--if-exists resume" in err


# --------------------------------------------------------------------------------------------------- schedule

def test_schedule_show_missing_file(ws, capsys):
    _fail(ws, capsys, ["schedule", "show", str(ws / "nope.json")], "InputFormatError", "neither JSON text nor an "
          "existing file")


def test_schedule_unknown_kind_in_file(ws, capsys):
    _fail(ws, capsys, ["schedule", "show", str(ws / "bad_schedule.json")], "ScheduleError", "no_such_kind")


def test_schedule_make_bad_gamma(ws, capsys):
    _fail(ws, capsys, ["schedule", "make", "--kind", "iw_opd", "--gamma", "-1", "--out", str(ws / "s.json")],
          "ScheduleError", "gamma", out=ws / "s.json")


def test_schedule_recommend_not_a_dataset(ws, capsys):
    _fail(ws, capsys, ["schedule", "recommend", str(ws / "prompt_dir"), "--out", str(ws / "s.json")],
          "DatasetError", "not a drift dataset", out=ws / "s.json")


# ----------------------------------------------------------------------------------------------------- report

def test_report_not_a_dataset(ws, capsys):
    _fail(ws, capsys, ["report", str(ws / "prompt_dir"), "--out", str(ws / "r.html")], "DatasetError",
          "not a drift dataset", out=ws / "r.html")


def test_report_truncated_part(ws, capsys):
    _fail(ws, capsys, ["report", str(ws / "toy_truncated"), "--out", str(ws / "r.html")], "DamagedPartError",
          "part-00000.parquet", out=ws / "r.html")


# ------------------------------------------------------------------------------------------------------ train

def _train(ws: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "toy", "--out", str(ws / "new_out"), "--steps", "1", *NO_PROGRESS, *extra]


def test_train_zero_steps(ws, capsys):
    _fail(ws, capsys, _train(ws, "--steps", "0"), "ConfigError", "steps", out=ws / "new_out")


def test_train_bad_schedule(ws, capsys):
    _fail(ws, capsys, _train(ws, "--schedule", str(ws / "bad_schedule.json")), "ScheduleError", "no_such_kind",
          out=ws / "new_out")


def test_train_unknown_device(ws, capsys):
    _fail(ws, capsys, _train(ws, "--device", "tpu7"), "DeviceError", "not a device", out=ws / "new_out")


def test_train_prompts_missing(ws, capsys):
    _fail(ws, capsys, _train(ws, "--prompts", str(ws / "nope.jsonl")), "InputFormatError", "does not exist",
          out=ws / "new_out")


def test_verbose_shows_the_traceback(ws, capsys):
    code = main(["-v", *_collect(ws, "--device", "tpu7")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "DeviceError" in err
