"""The report's token view: rollout selection, colour scales, visible and escaped text, absent columns, onsets, the
top-k fallback for the teacher's preferred token, and the sampler-mismatch panels it sits beside."""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift.cli import main
from drift.errors import ConfigError, DatasetError
from drift.report import ReportConfig
from drift.report.imported import Support
from drift.report.render import FigureStore, _environment
from drift.report.sections import Context
from drift.report.tokens import (
    MAX_TOKENS,
    NOT_RECORDED,
    ColorScale,
    build_rollout,
    load_onsets,
    make_scale,
    select_rollouts,
    token_texts,
    token_view_section,
    visible,
)
from drift.schema import DRIFT_METADATA_KEY, FULL_VOCAB_COLUMNS, TEACHER_COLUMNS, TOPK_COLUMNS
from drift.store import open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

KEY = ["run_id", "step", "prompt_id", "sample_id"]


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A small collected oracle-world dataset (8 prompts x 4 samples; full support, teacher_argmax recorded)."""
    out = tmp_path_factory.mktemp("tokens") / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(out), "--max-prompts", "8", "--progress", "false"]) == 0
    return out


def variant(src, dst, *, support: str | None = None, drop=(), add=None, teacher: bool = True):
    """A copy of dataset ``src`` whose token parts lose ``drop``, gain ``add(frame) -> {name: array}`` and say
    ``support`` in their drift metadata (row counts unchanged, so the manifest still matches)."""
    shutil.copytree(src, dst)
    for part in sorted((dst / "tokens").glob("*.parquet")):
        table = pq.read_table(part)
        meta = json.loads(table.schema.metadata[DRIFT_METADATA_KEY])
        table = table.drop_columns([c for c in dict.fromkeys(drop) if c in table.column_names])  # pyarrow: no repeats
        for name, arr in (add(table.to_pandas()) if add else {}).items():
            table = table.append_column(name, arr)
        if support:
            meta["support"] = support
        meta["has_teacher"] = teacher
        md = dict(table.schema.metadata or {})
        md[DRIFT_METADATA_KEY] = json.dumps(meta).encode()
        pq.write_table(table.replace_schema_metadata(md), part)
    return dst


def context(ds_path, tmp_path, **cfg):
    ds = open_dataset(ds_path)
    support = Support.of(ds.metadata, (f.name for f in ds.dataset("tokens").schema))
    return Context(ds=ds, cfg=ReportConfig(dataset=str(ds_path), **cfg), figures=FigureStore(tmp_path / "f"),
                   metrics=(), support=support)


def oracle_onsets(ds_path, path, *, extra_rows: int = 0):
    """Onsets planted from the oracle: the first position whose sampled token the oracle marks wrong."""
    df = open_dataset(ds_path).to_pandas(columns=[*KEY, "position", "response_len", "oracle_student_correct",
                                                  "oracle_token"])
    wrong = df[~df["oracle_student_correct"] & (df["oracle_token"] >= 0)]
    first = wrong.groupby(KEY)["position"].min()
    per = df.groupby(KEY)["response_len"].max().reset_index()
    per["onset_position"] = per.set_index(KEY).index.map(first).astype("Int64")
    per["onset_score"] = np.linspace(0, 1, len(per))
    rows = [per]
    if extra_rows:  # rows of rollouts this dataset does not have
        rows.append(pd.DataFrame({"run_id": ["elsewhere"] * extra_rows, "step": 0, "prompt_id": "x",
                                  "sample_id": range(extra_rows), "response_len": 5, "onset_position": 2,
                                  "onset_score": 0.0}))
    out = pd.concat(rows, ignore_index=True)
    table = pa.Table.from_pandas(out, preserve_index=False).cast(pa.schema([
        ("run_id", pa.string()), ("step", pa.int64()), ("prompt_id", pa.string()), ("sample_id", pa.int64()),
        ("response_len", pa.int32()), ("onset_position", pa.int32()), ("onset_score", pa.float64())]))
    pq.write_table(table, path)
    return per


def render_block(block) -> str:
    return _environment().from_string('{% from "tokens.html.j2" import token_view %}{{ token_view(b) }}').render(
        b=block)


def titles(html: str) -> list[str]:
    """The hover text of every drawn token, unescaped."""
    return [htmllib.unescape(t) for t in re.findall(r'<span class="tok[^"]*" data-t="\d+" style="[^"]*" '
                                                    r'title="([^"]*)"', html)]


# ----------------------------------------------------------------------------------------------- text
def test_visible_whitespace_and_invisible_characters():
    assert visible("ab") == (("", "ab"),)
    assert visible(" a\tb\n") == (("ws", "·"), ("", "a"), ("ws", "⇥"), ("", "b"), ("nl", "↵"))
    assert visible("") == (("ws", "∅"),)
    assert visible("x\u200by\x07") == (("", "x"), ("ws", "\\u200b"), ("", "y"), ("ws", "\\u0007"))
    assert visible("\u00a0") == (("ws", "␣"),)  # other spaces: visible, not a plain blank
    assert visible('<b>&"\'') == (("", '<b>&"\''),)  # left for the template to escape


class SentencePieceStub:
    """Decodes like SentencePiece: '▁' marks a leading space, dropped at the start of the decoded text."""

    pieces: ClassVar[dict[int, str]] = {0: "▁Hello", 1: "▁world", 2: "!", 3: "\n", 4: "<script>&\"'"}

    def decode(self, ids, **_):
        return "".join(self.pieces[i] for i in ids).replace("▁", " ").lstrip(" ")


def test_token_texts_keep_leading_spaces_and_fall_back_to_ids():
    tok = SentencePieceStub()
    assert tok.decode([1]) == "world"  # alone, the space is lost ...
    assert token_texts([0, 1, 2, 3, 4], tok) == ["Hello", " world", "!", "\n", "<script>&\"'"]  # ... in context, kept
    assert "".join(token_texts([0, 1, 2, 3, 4], tok)) == tok.decode([0, 1, 2, 3, 4])
    assert token_texts([5, 17], None) == ["⟨5⟩", "⟨17⟩"]


# ----------------------------------------------------------------------------------------------- colours
def test_colour_scales():
    div = make_scale("advantage", 2.0)
    assert (div.kind, div.lo, div.hi, div.cmap) == ("diverging", -2.0, 2.0, "RdBu")
    (neg, neg_fg), (zero, zero_fg), (pos, pos_fg), (past, _), (nan, _) = div.colors(
        np.array([-2.0, 0.0, 2.0, 50.0, np.nan]))
    assert neg == "#67001f" and pos == "#053061"  # RdBu's ends: dark red for A_t < 0, dark blue for A_t > 0
    assert past == pos  # beyond the limit: the end colour
    rgb = [int(zero[i:i + 2], 16) for i in (1, 3, 5)]
    assert min(rgb) > 235  # 0 is (near) white
    assert neg_fg == pos_fg == "#ffffff" and zero_fg == "#111111"  # readable text on dark and light cells
    assert nan == "#eeeeee"
    # red for every A_t < 0, blue for every A_t > 0, darker (less light) further from 0 on both sides
    x = np.linspace(-2, 2, 21)
    cs = [c for c, _ in div.colors(x)]
    red, green, blue = (np.array([int(c[i:i + 2], 16) for c in cs]) for i in (1, 3, 5))
    assert np.all((red - blue)[x < -0.1] > 0) and np.all((blue - red)[x > 0.1] > 0)
    light = red + green + blue
    assert np.all(np.diff(light[x <= 0]) > 0) and np.all(np.diff(light[x >= 0]) < 0)
    seq = make_scale("kl_reverse", 3.0)
    assert (seq.kind, seq.lo, seq.hi) == ("sequential", 0.0, 3.0)
    light, dark = (c for c, _ in seq.colors(np.array([0.0, 3.0])))
    assert sum(int(light[i:i + 2], 16) for i in (1, 3, 5)) > sum(int(dark[i:i + 2], 16) for i in (1, 3, 5))
    assert make_scale("k3", 0.0).hi > 0 and make_scale("k3", None).hi > 0  # a degenerate limit stays defined
    assert seq.gradient().startswith("linear-gradient(to right, #") and seq.ticks() == ("0", "1.5", "≥ 3")
    assert isinstance(div, ColorScale) and div.ticks() == ("-2", "0", "+2")


# ----------------------------------------------------------------------------------------------- selection
def totals_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"run_id": "r", "step": 0, "prompt_id": [f"p{i}" for i in range(n)], "sample_id": 0,
                         "total": rng.permutation(n).astype(float)})


def test_selection_spreads_from_highest_to_lowest():
    t = totals_frame(10)
    pick = select_rollouts(t, 4)
    assert list(pick["total"]) == [9.0, 6.0, 3.0, 0.0]
    assert pick["why"].iloc[0].startswith("highest total reverse KL (9) of the 10 rollouts")
    assert pick["why"].iloc[-1].startswith("lowest") and "67% quantile" in pick["why"].iloc[1]
    assert list(select_rollouts(t, 3)["total"]) == [9.0, 4.0, 0.0]
    assert select_rollouts(t, 3)["why"].iloc[1].startswith("median")
    assert len(select_rollouts(totals_frame(2), 4)) == 2  # fewer rollouts than asked: all of them
    assert select_rollouts(totals_frame(1), 2)["why"].iloc[0].startswith("only")


def test_selection_with_onsets_takes_half_and_half():
    t = totals_frame(10)
    t["has_onset_row"] = [True] * 9 + [False]  # one rollout the onsets file does not cover
    t["onset_position"] = pd.array([3, 5, None, 2, None, 7, 1, None, 4, None], dtype="Int64")
    pick = select_rollouts(t, 4)
    left, stay = pick[pick["onset_position"].notna()], pick[pick["onset_position"].isna()]
    assert len(left) == 2 and len(stay) == 2 and list(pick.index) == [0, 1, 2, 3]
    assert pick["onset_position"].notna().tolist() == [True, True, False, False]  # with an onset first
    assert all("with an onset" in w for w in left["why"]) and all("never leave" in w for w in stay["why"])
    assert not pick["has_onset_row"].eq(False).any()
    # with-onset rollouts: highest and lowest of their own ranking
    have = t[t["has_onset_row"] & t["onset_position"].notna()]["total"]
    assert list(left["total"]) == [have.max(), have.min()]
    # one group too small: the other fills the rest
    t["onset_position"] = pd.array([3, 5, 6, 2, 8, 7, 1, None, 4, None], dtype="Int64")
    pick = select_rollouts(t, 4)
    assert pick["onset_position"].notna().sum() == 3 and pick["onset_position"].isna().sum() == 1


# ----------------------------------------------------------------------------------------------- onsets
def test_load_onsets_checks_columns_and_keys(tmp_path):
    pq.write_table(pa.table({"run_id": ["a"], "step": [0], "prompt_id": ["p"], "sample_id": [0]}), tmp_path / "a.pq")
    with pytest.raises(DatasetError, match=r"lacks the column.*onset_position.*drift onset"):
        load_onsets(tmp_path / "a.pq")
    pq.write_table(pa.table({"run_id": ["a", "a"], "step": [0, 0], "prompt_id": ["p", "p"], "sample_id": [0, 0],
                             "onset_position": pa.array([1, None], pa.int32())}), tmp_path / "b.pq")
    with pytest.raises(DatasetError, match="twice"):
        load_onsets(tmp_path / "b.pq")
    (tmp_path / "c.pq").write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable parquet"):
        load_onsets(tmp_path / "c.pq")
    pq.write_table(pa.table({"run_id": ["a", "a"], "step": [0, 0], "prompt_id": [1, 2], "sample_id": [0, 1],
                             "onset_position": pa.array([4, None], pa.int32())}), tmp_path / "d.pq")
    got = load_onsets(tmp_path / "d.pq")
    assert list(got["prompt_id"]) == ["1", "2"] and got["onset_position"].isna().tolist() == [False, True]
    assert got["onset_score"].isna().all()
    with pytest.raises(ConfigError, match="--onsets"):
        ReportConfig(dataset="x", onsets=str(tmp_path / "nope.parquet"))


# ----------------------------------------------------------------------------------------------- the section
def test_token_view_of_a_collected_dataset_with_onsets(toy, tmp_path):
    per = oracle_onsets(toy, tmp_path / "onsets.parquet", extra_rows=3)
    ctx = context(toy, tmp_path, onsets=str(tmp_path / "onsets.parquet"), token_rollouts=4)
    sec = token_view_section(ctx)
    assert sec.present and sec.id == "tokens"
    block = sec.blocks[0]
    assert [s.metric for s in block.scales] == ["advantage", "kl_reverse", "k3"]
    assert len(block.rollouts) == 4
    notes = sec.blocks[1].paragraphs
    n_on = int(per["onset_position"].notna().sum())
    assert notes[0] == (f"Onsets from {tmp_path / 'onsets.parquet'}: 32 of 32 rollouts covered, {n_on} with an "
                        f"onset, {32 - n_on} that never leave the teacher.")
    assert "3 onset row(s) match no rollout" in notes[1]
    assert any("decoded with the tokenizer of" in p for p in notes)
    assert ctx.inputs[-1]["input"] == "onsets"
    # the drawn tokens are the dataset's, in order, and the onset sits where the file puts it
    df = open_dataset(toy).to_pandas()
    html = render_block(block)
    for view in block.rollouts:
        pid, sid = re.match(r"prompt (\S+) · sample (\d+)", view.label).groups()
        rows = df[(df["prompt_id"] == pid) & (df["sample_id"] == int(sid))].sort_values("position")
        assert [c.position for c in view.tokens] == rows["position"].tolist()
        onset = per[(per["prompt_id"] == pid) & (per["sample_id"] == int(sid))]["onset_position"].iloc[0]
        marked = [c.position for c in view.tokens if c.onset]
        assert marked == ([] if pd.isna(onset) else [int(onset)])
        assert any(f.startswith(f"onset at t = {int(onset)} (") for f in view.facts) if not pd.isna(onset) else \
            ("never leaves the teacher (no onset)" in view.facts)
        # hover: the teacher's top token is the dataset's teacher_argmax, the rank its teacher_rank
        cell, row = view.tokens[-1], rows.iloc[-1]
        assert f"(id {int(row['teacher_argmax'])})" in cell.title.split("teacher's top token: ")[1]
        assert f"teacher's rank of the sampled token: {int(row['teacher_rank'])}" in cell.title
        assert f"A_t = {row['advantage']:+.3f}" in cell.title
    assert sum(v.why.endswith("with an onset") for v in block.rollouts) == 2
    assert html.count("▸onset") == sum(any(f.startswith("onset at") for f in v.facts) for v in block.rollouts) == 2
    assert html.count('class="tok') == sum(len(v.tokens) for v in block.rollouts)
    assert "&lt;eos&gt;" in html and "<eos>" not in html  # the EOS token's text is escaped
    assert "NOT_RECORDED" not in html and NOT_RECORDED not in html  # every column is there


def test_token_view_of_topk_and_sampled_supports(toy, tmp_path):
    def topk(frame):
        # the teacher's top-k list, planted: its first id differs from teacher_argmax (dropped) to tell them apart
        first = (frame["token_id"].to_numpy() + 1) % 133
        return {"teacher_topk_ids": pa.array([[int(a), int(b)] for a, b in zip(first, frame["token_id"],
                                                                                 strict=True)],
                                             pa.list_(pa.int32()))}

    ds = variant(toy, tmp_path / "topk", support="topk", drop=(*FULL_VOCAB_COLUMNS, "teacher_argmax"), add=topk)
    sec = token_view_section(context(ds, tmp_path, token_rollouts=2))
    block = sec.blocks[0]
    assert [s.metric for s in block.scales] == ["advantage", "k3"]
    assert "k1 = −Σ A_t" in block.rollouts[0].why  # ranked by the sampled-token estimate without kl_reverse
    df = open_dataset(ds).to_pandas(columns=[*KEY, "position", "token_id"])
    view = block.rollouts[0]
    pid, sid = re.match(r"prompt (\S+) · sample (\d+)", view.label).groups()
    rows = df[(df["prompt_id"] == pid) & (df["sample_id"] == int(sid))].sort_values("position")
    for cell, tok in zip(view.tokens, rows["token_id"], strict=True):
        assert f"(id {(int(tok) + 1) % 133})" in cell.title.split("teacher's top token: ")[1].split("\n")[0]
    assert any("first of teacher_topk_ids" in p for p in sec.blocks[1].paragraphs)

    ds = variant(toy, tmp_path / "sampled", support="sampled",
                 drop=(*FULL_VOCAB_COLUMNS, *TOPK_COLUMNS, "teacher_argmax"))
    sec = token_view_section(context(ds, tmp_path, token_rollouts=2))
    cells = [c for v in sec.blocks[0].rollouts for c in v.tokens]
    assert cells and all(f"teacher's top token: {NOT_RECORDED}" in c.title and
                         f"teacher's rank of the sampled token: {NOT_RECORDED}" in c.title for c in cells)
    assert any("Not recorded in this dataset: teacher_argmax, teacher_rank" in p for p in sec.blocks[1].paragraphs)

    ds = variant(toy, tmp_path / "bare", support="sampled", teacher=False, drop=(
        *FULL_VOCAB_COLUMNS, *TOPK_COLUMNS, *TEACHER_COLUMNS, "teacher_argmax"))
    sec = token_view_section(context(ds, tmp_path))
    assert not sec.present and "a per-token metric to colour by" in sec.missing


def test_token_ids_when_no_tokenizer_resolves(toy, tmp_path):
    ds = tmp_path / "moved"
    shutil.copytree(toy, ds)
    cfg = json.loads((ds / "config.json").read_text())
    cfg["tokenizer"]["source"] = cfg["config"]["student"] = str(tmp_path / "gone")
    (ds / "config.json").write_text(json.dumps(cfg))
    sec = token_view_section(context(ds, tmp_path, token_rollouts=1))
    cell = sec.blocks[0].rollouts[0].tokens[0]
    assert cell.segments[0][1].startswith("⟨") and any("Token ids shown as ⟨id⟩" in p
                                                        for p in sec.blocks[1].paragraphs)


def test_escaping_and_visible_whitespace_in_the_html():
    tokens = pd.DataFrame({"run_id": "r", "step": 0, "prompt_id": "p", "sample_id": 0, "position": range(5),
                           "response_len": 5, "token_id": range(5), "advantage": [0.5, -1.0, 0.0, 2.0, np.nan],
                           "teacher_argmax": [4, 4, 4, 4, 4], "reward": 1.0})
    pick = {"run_id": "r", "step": 0, "prompt_id": "p", "sample_id": 0, "why": 'highest <i>"x"</i>',
            "has_onset_row": True, "onset_position": 3, "onset_score": 0.7}
    view = build_rollout(tokens, pick, [make_scale("advantage", 2.0)], frozenset(tokens.columns),
                         SentencePieceStub())
    assert [c.onset for c in view.tokens] == [False, False, False, True, False]
    from drift.report.render import TokenViewBlock

    html = render_block(TokenViewBlock("t", "T", "cap", (make_scale("advantage", 2.0),), (view,)))
    assert "<script" not in html and "<i>" not in html
    assert "&lt;script&gt;&amp;&#34;&#39;" in html  # token 4's text, escaped
    assert "highest &lt;i&gt;&#34;x&#34;&lt;/i&gt;" in html
    assert '<span class="ws">·</span>world' in html and '<span class="ws">↵</span></span><br>' in html
    hover = titles(html)
    assert len(hover) == 5 and "teacher's top token: '<script>&\"'' (id 4)" in hover[0]
    assert "sampled '↵' (id 3)" in hover[3] and "ONSET: the rollout leaves the teacher here (onset score 0.7)" \
        in hover[3]
    assert "teacher's rank of the sampled token: not recorded" in hover[0]
    assert "A_t = not recorded" in hover[4] and "--b0:#eeeeee" in view.tokens[4].style  # NaN: grey, said so
    assert html.count("▸onset") == 1 and "at-onset" in html
    assert "⟦onset⟧↵" in view.text


def test_a_long_rollout_is_windowed_around_its_onset():
    T = MAX_TOKENS + 500
    tokens = pd.DataFrame({"run_id": "r", "step": 0, "prompt_id": "p", "sample_id": 0, "position": range(T),
                           "response_len": T, "token_id": np.zeros(T, int), "advantage": 0.0})
    pick = {"run_id": "r", "step": 0, "prompt_id": "p", "sample_id": 0, "why": "w", "has_onset_row": True,
            "onset_position": T - 10}
    view = build_rollout(tokens, pick, [make_scale("advantage", 1.0)], frozenset(tokens.columns), None)
    assert len(view.tokens) == MAX_TOKENS and view.hidden == 500
    assert [c.position for c in view.tokens if c.onset] == [T - 10]
    assert any(f.startswith(f"tokens {T - MAX_TOKENS}–{T - 1} drawn of {T}") for f in view.facts)


def test_resolve_tokenizer_skips_what_is_not_a_path(toy):
    from types import SimpleNamespace

    from drift.report.tokens import resolve_tokenizer

    fake = SimpleNamespace(config={"config": {"student": {"source": "x"}}, "tokenizer": {"source": None}},
                           metadata={})
    assert resolve_tokenizer(fake) == (None, "the dataset's config.json names no tokenizer")
    tok, source = resolve_tokenizer(open_dataset(toy))
    assert tok is not None and source.endswith("oracle/student")
    cfg = open_dataset(toy).config
    wrong = SimpleNamespace(config={**cfg, "tokenizer": {**cfg["tokenizer"], "vocab_hash": "0" * 16}}, metadata={})
    tok, why = resolve_tokenizer(wrong)
    assert tok is None and "vocabulary hash differs" in why
