"""Token-level progress: plain lines off a terminal, callbacks that add up, sampling untouched."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from drift.collect.rollouts import sample_responses
from drift.collect.scoring import ScoringItem, score_items
from drift.progress import Progress, format_duration, make_progress
from tests.helpers import TINY_VOCAB, make_tiny_model

ANSI = re.compile(r"\x1b\[")


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_off_a_terminal_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = Progress(5000, "collect", stream=out, interval=5.0, clock=clock)
    for _ in range(10):
        clock.t += 1.0
        bar.update(412)
    bar.set_postfix_str("part 1/2")
    clock.t += 1.0
    bar.total = 4300
    bar.add_total(-100)  # an upper bound that shrank
    bar.update(80)
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert "\r" not in text and not ANSI.search(text)
    lines = text.splitlines()
    assert lines[0] == "collect: 2060/5000 tok (412 tok/s, ETA 7 s)"  # at t = 5 s: (5000 - 2060) / 412 = 7.1 s
    assert lines[1] == "collect: 4120/5000 tok (412 tok/s, ETA 2 s)"
    assert lines[-1] == "collect: 4200/4200 tok (382 tok/s, took 11 s) | part 1/2"
    assert len(lines) == 3


def test_make_progress_on_non_tty_stderr_prints_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    bar = make_progress(None, "score: tokens")
    bar.update(7)
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("score: tokens: 7 tok") and err.endswith("\n")
    assert "\r" not in err and not ANSI.search(err) and "ETA" not in err  # unknown total: no ETA


def test_disabled_counts_silently() -> None:
    out = io.StringIO()
    bar = Progress(10, "x", enabled=False, stream=out, interval=0.0)
    bar.update(3)
    bar.total = 20
    bar.close()
    assert bar.n == 3 and bar.total == 20 and out.getvalue() == ""


def test_tty_uses_a_bar_and_total_is_settable() -> None:
    out = io.StringIO()
    bar = Progress(10, "x", stream=out, tty=True)
    bar.update(4)
    bar.total = 8
    bar.set_postfix_str("p")
    assert bar._bar is not None and bar._bar.total == 8 and bar._bar.n == 4
    bar.close()
    assert "x" in out.getvalue()


@pytest.mark.parametrize(("seconds", "text"), [(9.4, "9 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.fixture(scope="module")
def student():
    return make_tiny_model(0)


def _prompts(n: int = 10) -> list[list[int]]:
    rng = np.random.default_rng(3)
    return [[1, *rng.integers(7, TINY_VOCAB, int(rng.integers(1, 6))).tolist()] for _ in range(n)]


STOPS = [2, *range(10, 40)]  # many stop ids: most rows stop early, at different steps


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_generation_callbacks_add_up_and_do_not_change_samples(student, temperature: float) -> None:
    prompts = _prompts()
    kw = dict(stop_ids=STOPS, pad_id=0, max_new_tokens=12, temperature=temperature, batch_size=4, seed=5)
    plain = sample_responses(student, prompts, **kw)
    steps: list[int] = []
    unused: list[int] = []
    counted = sample_responses(student, prompts, on_tokens=steps.append, on_early_stop=unused.append, **kw)
    assert counted == plain
    lengths = [len(g.response_ids) for g in plain]
    assert sum(steps) == sum(lengths)
    assert sum(steps) + sum(unused) == len(prompts) * 12
    assert any(n < 12 for n in lengths) and all(s > 0 for s in steps)
    only_tokens: list[int] = []
    assert sample_responses(student, prompts, on_tokens=only_tokens.append, **kw) == plain
    assert only_tokens == steps


def test_scoring_reports_every_response_token(student) -> None:
    teacher = make_tiny_model(1)
    rng = np.random.default_rng(4)
    items = [ScoringItem([1, 8], [1, 8, 9], rng.integers(2, TINY_VOCAB, int(n)).tolist())
             for n in rng.integers(0, 30, 9)]
    tokens: list[int] = []
    batches: list[int] = []
    score_items(student, teacher, items, chunk_size=16, max_batch_tokens=80, on_tokens=tokens.append,
                on_batch=batches.append)
    assert sum(tokens) == sum(len(it.response_ids) for it in items)
    assert len(tokens) > 1 and max(tokens) <= 16
    assert sum(batches) == len(items)
