"""Prompt files, rendering, privileged teacher views, verifiers."""

from __future__ import annotations

import json

import pytest

from drift.collect.prompts import PromptRecord, read_prompts, render_prompt, teacher_view
from drift.errors import InputFormatError
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


def test_render_raw_text_adds_bos_and_chat_uses_template(tiny_tokenizer):
    text, ids = render_prompt(tiny_tokenizer, "w1 w2")
    assert text == "w1 w2" and ids[0] == tiny_tokenizer.bos_token_id and len(ids) == 3
    text, ids = render_prompt(tiny_tokenizer, ({"role": "user", "content": "w1"},))
    assert text.startswith("<user> w1") and text.rstrip().endswith("<assistant>")
    assert ids[0] != tiny_tokenizer.bos_token_id  # the template, not the tokenizer, decides specials
    text, _ = render_prompt(tiny_tokenizer, "w1", chat="always")
    assert text.startswith("<user>")


def test_chat_messages_without_template_are_an_error():
    from tests.helpers import make_tiny_tokenizer

    with pytest.raises(InputFormatError, match="no chat template"):
        render_prompt(make_tiny_tokenizer(chat_template=None), ({"role": "user", "content": "w1"},))


def test_teacher_view_system_prompt():
    text = PromptRecord(id="a", prompt="question")
    assert teacher_view(text, None) is None
    assert teacher_view(text, "HINT") == "HINT\n\nquestion"
    chat = PromptRecord(id="b", prompt=({"role": "system", "content": "old"}, {"role": "user", "content": "q"}))
    assert teacher_view(chat, "new") == ({"role": "system", "content": "new"}, {"role": "user", "content": "q"})
    own = PromptRecord(id="c", prompt="q", teacher_prompt="privileged q")
    assert teacher_view(own, "ignored") == "privileged q"


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
