"""Prompt files, rendering, privileged teacher views, verifiers."""

from __future__ import annotations

import json

import pytest

from drift.collect.prompts import PromptRecord, read_prompts
from drift.errors import ChatTemplateError, InputFormatError
from drift.runtime.prompts import PromptStyle, render_prompt, render_record
from drift.verifiers import extract_final_answer, get_verifier, parse_number


def test_read_prompts_reports_every_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "hi"}),
        "{broken",
        json.dumps({"id": "b"}),
        json.dumps({"id": "a", "prompt": "dup"}),
        json.dumps({"prompt": [{"role": "user"}]}),
    ]) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_prompts(path)
    msg = str(err.value)
    for needle in ("line 2: not valid JSON", "line 3: missing required key 'prompt'", "duplicate id 'a'",
                   "line 5 'prompt'"):
        assert needle in msg


def test_read_prompts_fields_and_defaults(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "x", "answer": 4, "task": "t", "extra_key": 1}) + "\n\n"
                    + json.dumps({"id": "q", "prompt": [{"role": "user", "content": "c"}]}) + "\n")
    recs = read_prompts(path)
    assert recs[0].id == "0" and recs[0].answer == "4" and recs[0].task == "t" and recs[0].extra == {"extra_key": 1}
    assert recs[1].prompt == ({"role": "user", "content": "c"},)
    assert len(read_prompts(path, limit=1)) == 1


def test_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(InputFormatError, match="does not exist"):
        read_prompts(tmp_path / "nope.jsonl")


def test_render_default_applies_the_template_to_text_and_never_keeps_raw(tiny_tokenizer):
    # auto (default): the tokenizer has a template, so a text prompt becomes one user turn
    text, ids = render_prompt(tiny_tokenizer, "w1 w2")
    assert text.startswith("<user> w1 w2") and text.rstrip().endswith("<assistant>")
    assert ids[0] != tiny_tokenizer.bos_token_id  # the template, not the tokenizer, decides specials
    text, ids = render_prompt(tiny_tokenizer, ({"role": "user", "content": "w1"},))
    assert text.startswith("<user> w1") and text.rstrip().endswith("<assistant>")
    # never: raw text, encoded with the tokenizer's specials (BOS)
    text, ids = render_prompt(tiny_tokenizer, "w1 w2", chat="never")
    assert text == "w1 w2" and ids[0] == tiny_tokenizer.bos_token_id and len(ids) == 3
    text, _ = render_prompt(tiny_tokenizer, "w1", chat="always")
    assert text.startswith("<user>")


def test_render_without_template_is_raw_under_auto_and_an_error_under_always():
    from tests.helpers import make_tiny_tokenizer

    tok = make_tiny_tokenizer(chat_template=None)
    text, ids = render_prompt(tok, "w1")
    assert text == "w1" and ids[0] == tok.bos_token_id
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_prompt(tok, "w1", chat="always")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_prompt(tok, ({"role": "user", "content": "w1"},))
    with pytest.raises(ChatTemplateError, match="--chat-template never"):
        render_prompt(tok, ({"role": "user", "content": "w1"},), chat="never")


def test_teacher_system_prompt_is_a_system_turn_for_text_and_messages(tiny_tokenizer):
    style = PromptStyle(teacher_system_prompt="w9 w9")
    text = render_record(PromptRecord(id="a", prompt="w1 w2"), tiny_tokenizer, style)
    msgs = render_record(PromptRecord(id="b", prompt=({"role": "system", "content": "w7"},
                                                      {"role": "user", "content": "w1 w2"})), tiny_tokenizer, style)
    plain = render_record(PromptRecord(id="c", prompt=({"role": "user", "content": "w1 w2"},)), tiny_tokenizer, style)
    # the same experiment, whatever the jsonl shape: the teacher reads <system> w9 w9 then the user turn
    assert text.teacher_text == msgs.teacher_text == plain.teacher_text
    assert text.teacher_text.startswith("<system> w9 w9 </s> <user> w1 w2")
    assert text.student_text.startswith("<user> w1 w2") and text.privileged
    assert msgs.student_text.startswith("<system> w7")  # the student keeps its own system turn
    same = render_record(PromptRecord(id="d", prompt="w1"), tiny_tokenizer)
    assert not same.privileged and same.teacher_text is None and same.teacher_ids == same.student_ids
    own = render_record(PromptRecord(id="e", prompt="w1", teacher_prompt="w2 w3"), tiny_tokenizer, style)
    assert own.teacher_text.startswith("<system> w9 w9 </s> <user> w2 w3")
    student = render_record(PromptRecord(id="f", prompt="w1"), tiny_tokenizer,
                            PromptStyle(student_system_prompt="w8"))
    assert student.student_text.startswith("<system> w8") and student.teacher_text.startswith("<user> w1")


def test_raw_text_system_prompt_is_prepended(tiny_tokenizer):
    rp = render_record(PromptRecord(id="a", prompt="w1"), tiny_tokenizer,
                       PromptStyle(chat="never", teacher_system_prompt="w9"))
    assert rp.teacher_text == "w9\n\nw1" and rp.student_text == "w1"


def test_empty_and_folder_prompt_files(tmp_path):
    (tmp_path / "e.jsonl").write_text(json.dumps({"prompt": " "}) + "\n" + json.dumps(
        {"prompt": [{"role": "user", "content": ""}]}) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_prompts(tmp_path / "e.jsonl")
    assert "line 1 'prompt': is empty" in str(err.value) and "line 2 'prompt': every message is empty" in str(err.value)
    with pytest.raises(InputFormatError, match="is a folder"):
        read_prompts(tmp_path)
    (tmp_path / "l.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputFormatError, match="not UTF-8"):
        read_prompts(tmp_path / "l.jsonl")


def test_context_check_raises_or_truncates_left():
    from drift.errors import PromptTooLongError
    from drift.runtime.prompts import check_context

    assert check_context([1, 2, 3], 5, 8, what="p") == [1, 2, 3]
    with pytest.raises(PromptTooLongError, match="context of 7 tokens"):
        check_context([1, 2, 3], 5, 7, what="p")
    assert check_context([1, 2, 3], 5, 7, what="p", truncate="left") == [2, 3]
    with pytest.raises(PromptTooLongError, match="leaves no room"):
        check_context([1], 7, 7, what="p", truncate="left")


def test_unknown_tokens_are_counted(tiny_tokenizer):
    from drift.errors import TokenizerWarning
    from drift.runtime.prompts import unknown_token_report

    unk = tiny_tokenizer.unk_token_id
    with pytest.warns(TokenizerWarning, match="1 of 2 prompts contain the unknown token"):
        msg = unknown_token_report(tiny_tokenizer, [("a", [5, unk, unk]), ("b", [5])], what="prompts")
    assert "2 of 4 tokens" in msg


@pytest.mark.parametrize(("answer", "response", "expected"), [
    ("42", "so the answer is \\boxed{42}.", 1.0),
    ("42", "... 41 apples, wait 42", 1.0),
    ("3/4", "\\boxed{0.75}", 1.0),
    ("1,000", "It is 1000", 1.0),
    ("42", "\\boxed{43}", 0.0),
    ("42", "no number here", 0.0),
    ("Paris", "\\boxed{ paris }", 1.0),
    ("Paris", "London", 0.0),
])
def test_answer_verifier(answer, response, expected):
    v = get_verifier("answer")
    assert v(PromptRecord(id="x", prompt="q", answer=answer), response, [], []) == expected


def test_verifier_without_answer_returns_none_and_helpers():
    assert get_verifier("auto")(PromptRecord(id="x", prompt="q"), "42", [], []) is None
    assert extract_final_answer("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert parse_number("$1,234.5") == parse_number("1234.5")
    with pytest.raises(ValueError, match="unknown verifier"):
        get_verifier("magic")
