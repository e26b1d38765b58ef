"""The token view: a few rollouts drawn token by token, coloured by a per-token metric, with the onset marked.

drift's curves use *position* as a proxy for *prefix compatibility*: whether the prefix has left the region the
teacher would produce. The token view shows that on single rollouts. Each response token is drawn as its decoded
text (the dataset's own tokenizer, :func:`resolve_tokenizer`; the token ids when none loads), with whitespace made
visible (``·`` space, ``↵`` newline, ``⇥`` tab, ``∅`` a token that decodes to nothing on its own), and coloured by
one metric the reader switches between (:class:`ColorScale`):

- ``advantage``: A_t = teacher_logprob − student_logprob on a diverging scale centred on 0 (red: the teacher finds
  the sampled token less likely than the student does; blue: more likely), limits ±q98(|A_t|) over the dataset;
- ``kl_reverse`` = KL(π_S ‖ π_T) and ``k3`` on a sequential scale from 0 to their 98th percentile over the dataset.

Values past a limit take the end colour, so one scale means the same in every rollout shown. Hovering a token shows
its position, id and text, A_t and each metric, the teacher's preferred token (``teacher_argmax``; on top-k data the
first of ``teacher_topk_ids``) and the teacher's rank of the sampled token (``teacher_rank``, 0 = its top token),
and the trainer − sampler log-prob when the rollout carries ``rollout_logprob``; a column the dataset does not hold
reads "not recorded".

Which rollouts (:func:`select_rollouts`): every rollout is ranked by its total reverse KL Σ_t kl_reverse (Σ_t k1 =
−Σ_t A_t, the sampled-token estimate of the same quantity, when the dataset has no full-vocabulary KL) and
``--token-rollouts`` of them are taken evenly along the ranking, from the highest to the lowest. With the onsets of
``drift onset`` (``--onsets PATH``, default ``DATASET/onset/onsets.parquet``; columns :data:`ONSET_COLUMNS`, a NULL
``onset_position`` meaning the rollout never leaves the teacher), half of them come from the rollouts with an onset
and half from those without, each half spread the same way, and the onset token is marked in the text.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from drift.errors import DatasetError
from drift.report.render import Section, TextBlock, TokenViewBlock
from drift.schema import ROLLOUT_KEY

__all__ = ["COLOR_METRICS", "MAX_TOKENS", "ONSET_COLUMNS", "ColorScale", "RolloutView", "TokenCell", "load_onsets",
           "make_scale", "resolve_tokenizer", "select_rollouts", "token_texts", "token_view_section", "visible"]

log = logging.getLogger(__name__)

KEY = list(ROLLOUT_KEY)
COLOR_METRICS: tuple[str, ...] = ("advantage", "kl_reverse", "k3")
"""The metrics a token can be coloured by, in toggle order (the first present is shown first)."""
ONSET_COLUMNS: tuple[str, ...] = (*ROLLOUT_KEY, "onset_position")
"""Columns an onsets file must have (``drift onset`` also writes ``response_len`` and ``onset_score``)."""
MAX_TOKENS = 1024
"""Tokens drawn per rollout; a longer one shows a window of this many (around its onset when it has one)."""
NOT_RECORDED = "not recorded"
_QUANTILE = 0.98  # colour limits: this quantile of |A_t| (or of the metric) over the whole dataset
_LABELS = {"advantage": "A_t (advantage)", "kl_reverse": "kl_reverse", "k3": "k3"}
# ranking of rollouts: (column it needs, SQL of the per-token summand, what the total is called)
_RANKINGS = (("kl_reverse", "kl_reverse", "total reverse KL Σ kl_reverse"),
             ("advantage", "-advantage", "total k1 = −Σ A_t (sampled estimate of the reverse KL)"),
             ("k3", "k3", "total k3"))
_GLYPHS = {" ": "·", "\t": "⇥", "\r": "␍", "\n": "↵"}


# ------------------------------------------------------------------------------------------------ colours
@dataclass(frozen=True)
class ColorScale:
    """How one metric colours tokens: a matplotlib colormap over [lo, hi] (values outside take the end colour).

    Attributes:
        metric: the token column; label: its name in the toggle; kind: ``diverging`` (centred on 0) or
            ``sequential``; lo, hi: the limits; cmap: the matplotlib colormap name; how: where the limits come from.
    """

    metric: str
    label: str
    kind: Literal["diverging", "sequential"]
    lo: float
    hi: float
    cmap: str
    how: str = ""

    def colors(self, values: np.ndarray) -> list[tuple[str, str]]:
        """``(background, text colour)`` hex pairs for ``values`` (NaN: light grey, "no value")."""
        import matplotlib
        from matplotlib.colors import Normalize

        v = np.asarray(values, dtype=np.float64)
        rgba = matplotlib.colormaps[self.cmap](Normalize(self.lo, self.hi, clip=True)(np.nan_to_num(v)))
        rgb = np.asarray(rgba)[..., :3].reshape(-1, 3)
        # dark text on light backgrounds (relative luminance, sRGB weights), white on dark ones
        light = rgb @ np.array([0.2126, 0.7152, 0.0722]) > 0.5
        out = []
        for c, is_light, missing in zip(rgb, light, np.isnan(v).reshape(-1), strict=True):
            out.append(("#eeeeee", "#555555") if missing else (_hex(c), "#111111" if is_light else "#ffffff"))
        return out

    def gradient(self, stops: int = 11) -> str:
        """A CSS ``linear-gradient`` of the colormap from lo to hi (the legend)."""
        import matplotlib

        cmap = matplotlib.colormaps[self.cmap]
        parts = [f"{_hex(cmap(i / (stops - 1))[:3])} {100 * i / (stops - 1):.0f}%" for i in range(stops)]
        return f"linear-gradient(to right, {', '.join(parts)})"

    def ticks(self) -> tuple[str, str, str]:
        """The legend's three labels: lo, middle, hi."""
        return f"{self.lo:.3g}", f"{(self.lo + self.hi) / 2:.3g}", f"≥ {self.hi:.3g}" if self.kind == "sequential" \
            else f"{self.hi:+.3g}"


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * min(max(float(x), 0.0), 1.0)):02x}" for x in rgb)


def make_scale(metric: str, limit: float | None) -> ColorScale:
    """The scale of ``metric`` with limit ``limit`` (the dataset's 98th percentile of |A_t| or of the metric).

    ``advantage`` is diverging on [−limit, +limit] (``RdBu``: negative red, positive blue); the KL metrics are
    sequential on [0, limit] (``Purples``). A missing or zero limit becomes 1e-6 so the scale stays defined.
    """
    lim = float(limit) if limit is not None and math.isfinite(float(limit)) and float(limit) > 0 else 1e-6
    how = f"limits: the {_QUANTILE:.0%} quantile of " + ("|A_t|" if metric == "advantage" else metric) + \
        " over the dataset"
    if metric == "advantage":
        return ColorScale(metric, _LABELS[metric], "diverging", -lim, lim, "RdBu", how)
    return ColorScale(metric, _LABELS.get(metric, metric), "sequential", 0.0, lim, "Purples", how)


# ------------------------------------------------------------------------------------------------ text
def resolve_tokenizer(ds: Any) -> tuple[Any | None, str]:
    """The tokenizer the dataset's token ids belong to, and where it came from (or why there is none).

    Candidates, in order, as the dataset's ``config.json`` records them: the tokenizer's ``source`` (collect,
    score and import write it), the stage's ``--tokenizer`` and its ``--student``. One whose vocabulary hash
    differs from the recorded ``vocab_hash`` is refused (its ids would decode to other tokens).
    """
    from drift.errors import ModelLoadError
    from drift.models import load_tokenizer, vocab_hash

    top = ds.config or {}
    info = top.get("tokenizer") if isinstance(top.get("tokenizer"), Mapping) else {}
    conf = top.get("config") if isinstance(top.get("config"), Mapping) else {}
    recorded = info.get("vocab_hash") or ds.metadata.get("vocab_hash")
    # only plain paths or specs: other stages record e.g. a model's description under "student"
    candidates = list(dict.fromkeys(c for c in (info.get("source"), conf.get("tokenizer"), conf.get("student"))
                                    if isinstance(c, str) and c))
    why = "the dataset's config.json names no tokenizer"
    for spec in candidates:
        try:
            tok = load_tokenizer(str(spec), required=False)
        except (ModelLoadError, OSError, ValueError) as exc:
            why = f"the recorded tokenizer {spec} does not load ({exc})"
            continue
        if tok is None:
            why = f"{spec} holds no tokenizer files"
            continue
        if recorded and vocab_hash(tok) != recorded:
            why = f"{spec}'s vocabulary hash differs from the one recorded with the dataset ({recorded})"
            continue
        return tok, str(spec)
    return None, why


def token_texts(ids: Sequence[int], tokenizer: Any | None, *, window: int = 6) -> list[str]:
    """The text each token adds to the decoded response (``⟨id⟩`` without a tokenizer).

    A token's piece is ``decode(ids[t-w : t+1])`` minus ``decode(ids[t-w : t])``: decoding a token alone drops
    SentencePiece's leading space and splits multi-byte characters; the short left context keeps both. Where the
    longer text does not extend the shorter one, the token is decoded alone.
    """
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [f"⟨{i}⟩" for i in ids]

    def dec(x: list[int]) -> str:
        return str(tokenizer.decode(x, skip_special_tokens=False, clean_up_tokenization_spaces=False)) if x else ""

    out = []
    for t in range(len(ids)):
        lo = max(0, t - window)
        before, full = dec(ids[lo:t]), dec(ids[lo:t + 1])
        out.append(full[len(before):] if full.startswith(before) else dec(ids[t:t + 1]))
    return out


def visible(text: str) -> tuple[tuple[str, str], ...]:
    """``text`` as segments ``(kind, text)`` with whitespace made visible.

    ``kind`` is ``""`` for plain text, ``"ws"`` for a glyph standing in for whitespace or an invisible character
    (``·`` space, ``⇥`` tab, ``␍`` carriage return, ``\\uXXXX`` other controls), ``"nl"`` for a newline (``↵``,
    drawn before a line break), and ``∅`` marks a token that adds no text. The text is *not* HTML-escaped here: the
    template does that.
    """
    segs: list[tuple[str, str]] = []
    buf: list[str] = []
    for ch in text:
        if ch in _GLYPHS or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            if buf:
                segs.append(("", "".join(buf)))
                buf = []
            glyph = _GLYPHS.get(ch) or ("␣" if ch.isspace() else f"\\u{ord(ch):04x}")
            segs.append(("nl" if ch == "\n" else "ws", glyph))
        else:
            buf.append(ch)
    if buf:
        segs.append(("", "".join(buf)))
    return tuple(segs) if segs else (("ws", "∅"),)


def _shown(text: str) -> str:
    """``text`` with whitespace glyphs, on one line (hover text, Markdown)."""
    return "".join(s for _, s in visible(text))


# ------------------------------------------------------------------------------------------------ onsets
def load_onsets(path: str | Path) -> pd.DataFrame:
    """Read an onsets file (``drift onset``): one row per rollout, ``onset_position`` NULL when it never leaves.

    Returns the key columns with pandas types matching the token rows (``onset_position`` as nullable ``Int64``),
    plus ``onset_score`` / ``response_len`` when present (NaN otherwise).

    Raises:
        DatasetError: the file does not read as parquet, lacks a column of :data:`ONSET_COLUMNS`, or repeats a key.
    """
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"--onsets {path} is not a readable parquet file ({exc}); write it with "
                           "`drift onset DATASET --out OUT` (OUT/onsets.parquet)") from exc
    lacking = [c for c in ONSET_COLUMNS if c not in frame.columns]
    if lacking:
        raise DatasetError(f"--onsets {path} lacks the column(s) {', '.join(lacking)}; an onsets file holds "
                           f"{', '.join(ONSET_COLUMNS)} (and onset_score), as `drift onset` writes it")
    out = pd.DataFrame({"run_id": frame["run_id"].astype(str), "step": frame["step"].astype(np.int64),
                        "prompt_id": frame["prompt_id"].astype(str), "sample_id": frame["sample_id"].astype(np.int64),
                        "onset_position": frame["onset_position"].astype("Int64")})
    for extra in ("onset_score", "response_len"):
        out[f"onset_{extra}" if extra == "response_len" else extra] = (
            pd.to_numeric(frame[extra], errors="coerce") if extra in frame.columns else np.nan)
    dup = out.duplicated(KEY)
    if dup.any():
        raise DatasetError(f"--onsets {path} lists {int(dup.sum())} rollout(s) twice (first: "
                           f"{tuple(out[dup].iloc[0][KEY])}); one row per rollout is expected")
    return out


def _default_onsets(root: Path) -> Path | None:
    for cand in (root / "onset" / "onsets.parquet", root / "onsets.parquet"):
        if cand.is_file():
            return cand
    return None


# ------------------------------------------------------------------------------------------------ selection
def _rank_label(i: int, m: int) -> str:
    """The name of the i-th of m values in ascending order."""
    if m == 1:
        return "only"
    if i == m - 1:
        return "highest"
    if i == 0:
        return "lowest"
    if i in ((m - 1) // 2, m // 2):
        return "median"
    return f"{i / (m - 1):.0%} quantile of the"


def _spread(frame: pd.DataFrame, k: int, what: str, group: str) -> pd.DataFrame:
    """``k`` rows of ``frame`` evenly spread along its ``total`` ranking, highest first, each with a ``why``."""
    m = len(frame)
    if m == 0 or k <= 0:
        return frame.iloc[:0].assign(why=pd.Series(dtype=str))
    ranked = frame.sort_values(["total", *KEY], kind="stable").reset_index(drop=True)
    idx = list(dict.fromkeys(round(float(x)) for x in np.linspace(m - 1, 0, min(k, m))))
    rows = ranked.iloc[idx].copy()
    rows["why"] = [f"{_rank_label(i, m)} {what} ({ranked['total'].iloc[i]:.3g}) of the {m} rollouts{group}"
                   for i in idx]
    return rows


def select_rollouts(totals: pd.DataFrame, n: int, *, what: str = "total reverse KL") -> pd.DataFrame:
    """Pick ``n`` rollouts to draw (see the module docstring), each with a ``why``.

    Args:
        totals: one row per rollout: the key columns, ``total`` (the ranking quantity) and, when onsets are known,
            ``onset_position`` (nullable int; NA = never leaves) and ``has_onset_row`` (the onsets file covers it).
        n: how many to draw.
        what: the name of ``total`` in the ``why`` text.

    Returns:
        The chosen rows (highest total first; with onsets, the rollouts with an onset first), with ``why``.
    """
    if "has_onset_row" not in totals.columns or not totals["has_onset_row"].any():
        return _spread(totals, n, what, "").reset_index(drop=True)
    covered = totals[totals["has_onset_row"]]
    left = covered[covered["onset_position"].notna()]
    stay = covered[covered["onset_position"].isna()]
    k_left = min(len(left), math.ceil(n / 2))
    k_stay = min(len(stay), n - k_left)
    k_left = min(len(left), n - k_stay)  # give back what the other half cannot fill
    return pd.concat([_spread(left, k_left, what, " with an onset"),
                      _spread(stay, k_stay, what, " that never leave the teacher (no onset)")],
                     ignore_index=True)


# ------------------------------------------------------------------------------------------------ the view
@dataclass(frozen=True)
class TokenCell:
    """One drawn token: its ``position``, visible text ``segments`` (:func:`visible`), ``style`` (the CSS colour
    variables ``--bI`` / ``--fI`` of each scale I), hover text ``title``, and whether the onset is here."""

    position: int
    segments: tuple[tuple[str, str], ...]
    style: str
    title: str
    onset: bool = False


@dataclass(frozen=True)
class RolloutView:
    """One drawn rollout: ``label`` (its key), ``why`` it was chosen, ``facts`` (length, reward, onset), its
    ``tokens``, ``hidden`` (tokens not drawn: past :data:`MAX_TOKENS`), and ``text`` (the drawn text on one
    line, the onset marked ``⟦onset⟧``, for the Markdown summary)."""

    label: str
    why: str
    facts: tuple[str, ...]
    tokens: tuple[TokenCell, ...]
    hidden: int
    text: str


def _fmt(v: Any, spec: str = "+.3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return NOT_RECORDED
    return f"{float(v):{spec}}"


def _teacher_top(row: Mapping[str, Any], cols: frozenset[str]) -> int | None:
    """The teacher's preferred token id: ``teacher_argmax``, else the first of ``teacher_topk_ids``."""
    if "teacher_argmax" in cols:
        v = row.get("teacher_argmax")
        if v is not None and not pd.isna(v):
            return int(v)
    if "teacher_topk_ids" in cols:
        ids = row.get("teacher_topk_ids")
        if ids is not None and len(ids):
            return int(ids[0])
    return None


def _hover(row: Mapping[str, Any], text: str, cols: frozenset[str], scales: Sequence[ColorScale],
           decode: Any, onset: bool, onset_score: Any) -> str:
    """The hover text of one token (plain text; the template escapes it)."""
    t, T = int(row["position"]), int(row["response_len"])
    lines = [f"t = {t} (t/T = {t / T:.2f}) · sampled '{_shown(text)}' (id {int(row['token_id'])})"]
    lines.append("A_t = " + (_fmt(row.get("advantage")) if "advantage" in cols else NOT_RECORDED))
    lines += [f"{s.metric} = {_fmt(row.get(s.metric), '.4g')}" for s in scales if s.metric != "advantage"]
    top = _teacher_top(row, cols)
    lines.append("teacher's top token: " + (f"'{_shown(decode(top))}' (id {top})" if top is not None
                                            else NOT_RECORDED))
    rank = row.get("teacher_rank") if "teacher_rank" in cols else None
    lines.append("teacher's rank of the sampled token: " + (f"{int(rank)} (0 = its top token)"
                                                            if rank is not None and not pd.isna(rank)
                                                            else NOT_RECORDED))
    if "rollout_logprob" in cols:
        q = row.get("rollout_logprob")
        lines.append("trainer − sampler log-prob: " + _fmt(
            None if q is None or pd.isna(q) else float(row["student_logprob"]) - float(q)))
    mask = row.get("loss_mask") if "loss_mask" in cols else None
    if mask is not None and not pd.isna(mask) and not bool(mask):
        lines.append("not trained on (loss_mask false)")
    if onset:
        lines.append("ONSET: the rollout leaves the teacher here"
                     + (f" (onset score {float(onset_score):.3g})" if onset_score is not None
                        and not pd.isna(onset_score) else ""))
    return "\n".join(lines)


def build_rollout(tokens: pd.DataFrame, pick: Mapping[str, Any], scales: Sequence[ColorScale], cols: frozenset[str],
                  tokenizer: Any | None) -> RolloutView:
    """The view of one rollout from its token rows (sorted by position) and its selection row ``pick``."""
    T = int(tokens["response_len"].iloc[0])
    onset = pick.get("onset_position")
    onset = None if onset is None or pd.isna(onset) else int(onset)
    start = 0
    if len(tokens) > MAX_TOKENS and onset is not None and onset >= MAX_TOKENS * 3 // 4:
        start = min(onset - MAX_TOKENS // 4, len(tokens) - MAX_TOKENS)
    shown = tokens.iloc[start:start + MAX_TOKENS]
    texts = token_texts(tokens["token_id"].tolist(), tokenizer)[start:start + MAX_TOKENS]
    colors = [s.colors(shown[s.metric].to_numpy(np.float64)) for s in scales]

    def decode(i: int) -> str:
        return token_texts([i], tokenizer)[0]

    cells, plain = [], []
    for j, row in enumerate(shown.to_dict("records")):
        here = onset is not None and int(row["position"]) == onset
        style = ";".join(f"--b{k}:{c[j][0]};--f{k}:{c[j][1]}" for k, c in enumerate(colors))
        cells.append(TokenCell(int(row["position"]), visible(texts[j]), style,
                               _hover(row, texts[j], cols, scales, decode, here, pick.get("onset_score")), here))
        plain.append(("⟦onset⟧" if here else "") + _shown(texts[j]))
    facts = [f"T = {T} tokens"]
    reward = tokens["reward"].iloc[0] if "reward" in tokens else None
    if reward is not None and not pd.isna(reward):
        facts.append(f"reward {float(reward):.3g}")
    if not pick.get("has_onset_row", False):
        if "has_onset_row" in pick:
            facts.append("no onset computed for this rollout")
    elif onset is None:
        facts.append("never leaves the teacher (no onset)")
    else:
        facts.append(f"onset at t = {onset} (t/T = {onset / T:.2f})")
    if start or len(tokens) > start + MAX_TOKENS:
        facts.append(f"tokens {start}–{start + len(shown) - 1} drawn of {len(tokens)}")
    label = f"prompt {pick['prompt_id']} · sample {pick['sample_id']} · step {pick['step']} · run {pick['run_id']}"
    return RolloutView(label, str(pick["why"]), tuple(facts), tuple(cells), len(tokens) - len(shown),
                       "".join(plain))


def token_view_section(ctx: Any) -> Section:
    """The token view of ``ctx``'s dataset (see the module docstring)."""
    sec = Section("tokens", "Token view",
                  "A few rollouts drawn token by token, to see where a response leaves what the teacher would "
                  "write. Each token is coloured by the chosen metric (switch below); hover a token for its "
                  "values, the teacher's preferred token and the teacher's rank of the sampled token. Whitespace "
                  "is drawn: · space, ↵ newline, ⇥ tab. The onset (from `drift onset`) is marked ▸.")
    ds, cfg = ctx.ds, ctx.cfg
    cols = frozenset(ctx.support.columns) if ctx.support is not None else \
        frozenset(f.name for f in ds.dataset("tokens").schema)
    metrics = [m for m in COLOR_METRICS if m in cols]
    if not metrics:
        hint = ctx.support.hint("advantage") if ctx.support is not None else None
        sec.missing = ("not in this dataset: a per-token metric to colour by (advantage, kl_reverse or k3): "
                       + (hint or "score the rollouts with a teacher (`drift score`)"))
        return sec
    _, summand, what = next(r for r in _RANKINGS if r[0] in cols)
    con = ds.duckdb()
    keys = ", ".join(KEY)
    totals = con.sql(f"SELECT {keys}, sum({summand}) AS total, max(response_len) AS T FROM tokens "
                     f"GROUP BY {keys}").df()
    limits = con.sql("SELECT " + ", ".join(
        f"quantile_cont({'abs(advantage)' if m == 'advantage' else m}, {_QUANTILE})" for m in metrics)
        + " FROM tokens").fetchall()[0]
    scales = [make_scale(m, lim) for m, lim in zip(metrics, limits, strict=True)]
    totals = totals.astype({"run_id": str, "prompt_id": str, "step": np.int64, "sample_id": np.int64})
    notes: list[str] = []
    path = Path(cfg.onsets) if getattr(cfg, "onsets", None) else _default_onsets(Path(ds.root))
    if path is not None:
        onsets = load_onsets(path)
        merged = totals.merge(onsets.assign(has_onset_row=True), on=KEY, how="left")
        merged["has_onset_row"] = merged["has_onset_row"].astype("boolean").fillna(False).astype(bool)
        stray = len(onsets) - int(merged["has_onset_row"].sum())
        bad = merged["has_onset_row"] & merged["onset_position"].notna() & (
            (merged["onset_position"].fillna(0) < 0) | (merged["onset_position"].fillna(0) >= merged["T"]))
        lens = merged["has_onset_row"] & merged["onset_response_len"].notna() & (
            merged["onset_response_len"] != merged["T"])
        covered = merged[merged["has_onset_row"]]
        n_on = int(covered["onset_position"].notna().sum())
        notes.append(f"Onsets from {path}: {len(covered):,} of {len(totals):,} rollouts covered, {n_on:,} with an "
                     f"onset, {len(covered) - n_on:,} that never leave the teacher.")
        if stray:
            notes.append(f"{stray:,} onset row(s) match no rollout of this dataset (another dataset's onsets?).")
        if bad.any() or lens.any():
            notes.append(f"{int((bad | lens).sum()):,} onset row(s) disagree with the dataset (onset outside the "
                         "response, or another response length) and are left out.")
            merged.loc[bad | lens, "has_onset_row"] = False
        totals = merged
        ctx.note_input("onsets", "—", "reloaded", str(path))
    picked = select_rollouts(totals, cfg.token_rollouts, what=what)
    tokenizer, source = resolve_tokenizer(ds)
    wanted = [c for c in ("position", "response_len", "token_id", "reward", "student_logprob", "rollout_logprob",
                          "loss_mask", "teacher_argmax", "teacher_topk_ids", "teacher_rank", *metrics)
              if c in cols]
    con.register("picked", picked[KEY])
    rows = con.sql(f"SELECT t.{', t.'.join(KEY)}, {', '.join('t.' + c for c in dict.fromkeys(wanted))} "
                   f"FROM tokens t JOIN picked USING ({keys}) ORDER BY {', '.join('t.' + k for k in KEY)}, "
                   "t.position").df()
    con.close()
    rows = rows.astype({"run_id": str, "prompt_id": str, "step": np.int64, "sample_id": np.int64})
    groups = dict(iter(rows.groupby(KEY, sort=False)))
    views = [build_rollout(groups[tuple(p[k] for k in KEY)], p, scales, cols, tokenizer)
             for p in picked.to_dict("records") if tuple(p[k] for k in KEY) in groups]
    absent = [c for c in ("teacher_argmax", "teacher_rank") if c not in cols]
    if "teacher_argmax" in absent and "teacher_topk_ids" in cols:
        absent.remove("teacher_argmax")
        notes.append("The teacher's top token is the first of teacher_topk_ids (top-k support).")
    if absent:
        notes.append(f"Not recorded in this dataset: {', '.join(absent)} (the hover says so).")
    notes.append("Token text decoded with the tokenizer of " + source if tokenizer is not None else
                 f"Token ids shown as ⟨id⟩: no tokenizer ({source}).")
    caption = (f"Rollouts ranked by {what} and picked evenly from the highest to the lowest"
               + (", half with an onset and half without" if path is not None else "") + "; colours: "
               + "; ".join(f"{s.metric}: {s.how}" for s in scales) + ".")
    sec.blocks.append(TokenViewBlock("tokens", "Rollouts token by token", caption, tuple(scales), tuple(views)))
    sec.blocks.append(TextBlock(tuple(notes), bullets=True))
    return sec
