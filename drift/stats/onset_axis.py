"""``drift fit --by onset``: metrics by offset from the divergence onset, and the before-vs-after contrast.

Position stands in for prefix compatibility: what matters is whether the prefix has left the region the teacher
would produce. ``drift onset DATASET --out OUT`` finds, per rollout, the first position where it leaves
(``OUT/onsets.parquet``: :data:`drift.schema.ONSET_COLUMNS`, one row per rollout, ``onset_position`` null when it never
leaves). With ``--by onset --onsets OUT/onsets.parquet`` a token at position ``t`` of a rollout with onset ``o`` is
binned by its offset ``d = t - o`` (tokens) in fixed-width bins over ``[-W, +W)`` (``--onset-window W``, default
32; ``--width``, default 4; ``d = 0`` is the onset token itself, the first bin at or after the onset). The file is
joined on the rollout key ``(run_id, step, prompt_id, sample_id)`` in DuckDB (:func:`drift.stats.reader.open_tokens`
``joins``), so the Ray engine's tasks see the same offsets.

Which rollouts count: every rollout of the dataset (at the binned steps) must have a row (a rollout without one
means the file belongs to another dataset: :class:`~drift.errors.DatasetError`, as for a different
``response_len``, a duplicated key or an onset outside the response); rollouts whose onset is null never leave the
teacher's support and are excluded from the onset bins and *counted* (:class:`OnsetInfo`, ``n_excluded`` in
``fits.json``, ``config.json`` and the summary); tokens outside the window are left out.

What is computed: the bins with cluster-bootstrap intervals (unchanged: clusters are prompts), the direction test
over the offset bins (:func:`drift.stats.direction_test`: does the metric trend across the window) and the
**before-vs-after contrast** (:func:`onset_contrast`): with clusters ``k``,

    before = sum_k s_k(d < 0) / sum_k n_k(d < 0),   after = sum_k s_k(d >= 0) / sum_k n_k(d >= 0)   (within the window)
    diff = after - before

with the expanded-percentile cluster-bootstrap interval (the same resampled clusters as the bins' intervals) and a
two-sided null-centred bootstrap p-value ``(1 + #{|diff* - diff| >= |diff|}) / (n + 1)``; verdict
``higher_after`` / ``lower_after`` when ``p < alpha``, else ``not_significant``, ``insufficient`` below
``min_clusters`` clusters or without tokens on both sides. No curve families are fitted: the decay models are
functions of a position ``t > 0`` from the start of the response, and an offset axis centred on an estimated
change point is not one (``fits.json`` lists no models and says so in ``selection_note``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drift.errors import DatasetError, SchemaError
from drift.onset.run import ONSETS_FILE
from drift.schema import ONSET_COLUMNS, ROLLOUT_KEY, validate_columns
from drift.stats.bootstrap import expanded_percentile_interval, ratio_replicates
from drift.stats.direction import format_p
from drift.stats.reader import TokenSource, quote_ident

if TYPE_CHECKING:
    from drift.stats.bins import Cell, RolloutBins

__all__ = ["CONTRAST_VERDICTS", "OnsetContrast", "OnsetInfo", "check_onsets",
           "onset_contrast", "onsets_file"]

CONTRAST_VERDICTS: tuple[str, ...] = ("higher_after", "lower_after", "not_significant", "insufficient")


def _make_it(dataset: str) -> str:
    return f"write it with `drift onset {dataset} --out OUT` and pass --onsets OUT/{ONSETS_FILE}"


def onsets_file(path: str | Path, dataset: str = "DATASET") -> str:
    """The checked path of an ``onsets.parquet`` (a folder holding one is accepted).

    Raises:
        DatasetError: no such file, or not a readable parquet file (naming ``drift onset DATASET --out OUT``).
        SchemaError: a column of :data:`drift.schema.ONSET_COLUMNS` is missing or of another type (listing every one).
    """
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / ONSETS_FILE
    if not p.is_file():
        raise DatasetError(f"--onsets {path}: no such file; {_make_it(dataset)}")
    try:
        schema = pq.read_schema(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not parquet
        raise DatasetError(f"--onsets {p} is not a readable parquet file ({type(exc).__name__}: {exc}); "
                           f"{_make_it(dataset)}") from None
    try:
        validate_columns(schema, ONSET_COLUMNS, what=f"onsets file {p}")
    except SchemaError as exc:
        raise SchemaError(f"onsets file {p}", [*exc.problems, f"{p} is not an onsets file of `drift onset`; "
                                               f"{_make_it(dataset)}"]) from None
    return str(p)


@dataclass(frozen=True)
class OnsetInfo:
    """Which rollouts the onset bins rest on (recorded in ``config.json``, ``fits.json`` and the summary).

    Attributes:
        onsets: the joined file. window: W; width: bin width (tokens).
        n_rollouts: rollouts of the dataset at the binned steps; n_with_onset: those with an onset (binned);
        n_excluded: those with a null onset (they never leave the teacher's support): left out of the bins.
    """

    onsets: str
    window: int
    width: int
    n_rollouts: int
    n_with_onset: int
    n_excluded: int

    def to_dict(self) -> dict[str, Any]:
        return {"onsets": self.onsets, "window": [-self.window, self.window], "width": self.width,
                "n_rollouts": self.n_rollouts, "n_with_onset": self.n_with_onset, "n_excluded": self.n_excluded,
                "excluded": "rollouts with a null onset_position (never leave the teacher's support)"}

    def describe(self) -> str:
        return (f"onset offsets d = t - onset in [-{self.window}, +{self.window}) tokens, width {self.width}: "
                f"{self.n_with_onset:,} of {self.n_rollouts:,} rollouts have an onset; {self.n_excluded:,} excluded "
                f"(null onset: never leave)")


def check_onsets(src: TokenSource, con: Any, path: str, *, steps: tuple[int, ...] | None, window: int,
                 width: int) -> OnsetInfo:
    """Check that ``path`` is the onsets file of these tokens and count the rollouts it excludes.

    Args:
        src: the tokens (stored columns; any join is ignored here); con: a connection to them.
        path: a checked :func:`onsets_file`. steps: the step filter of the binning (None: all).
        window, width: recorded in the :class:`OnsetInfo`.

    Raises:
        DatasetError: a duplicated key in the file, a rollout without a row, a different ``response_len``, or an
            onset outside ``0 .. response_len - 1`` (each: the file belongs to another dataset).
    """
    dataset = str(src.dataset.root) if src.dataset is not None else "DATASET"
    lit = "'" + path.replace("'", "''") + "'"
    keys = ", ".join(quote_ident(k) for k in ROLLOUT_KEY)
    n_rows, n_keys = con.sql(f"SELECT count(*), count(DISTINCT ({keys})) FROM read_parquet({lit})").fetchall()[0]
    if n_rows != n_keys:
        raise DatasetError(f"{path}: {n_rows - n_keys} duplicated rollout key(s) (run_id, step, prompt_id, "
                           f"sample_id); an onsets file has one row per rollout: {_make_it(dataset)}")
    on = " AND ".join(f"t.{quote_ident(k)} = o.{quote_ident(k)}" for k in ROLLOUT_KEY)
    where = "t.position = 0" + (f" AND t.step IN ({', '.join(str(int(s)) for s in steps)})" if steps else "")
    rows = con.sql(f"""
        WITH r AS (SELECT t.run_id, t.step, t.prompt_id, t.sample_id, t.response_len AS T, o.run_id IS NULL AS lost,
                          o.response_len AS oT, o.onset_position AS onset
                   FROM tokens t LEFT JOIN read_parquet({lit}) o ON {on} WHERE {where})
        SELECT count(*), count(*) FILTER (WHERE lost), count(*) FILTER (WHERE NOT lost AND oT <> T),
               count(*) FILTER (WHERE NOT lost AND onset IS NULL),
               count(*) FILTER (WHERE onset < 0 OR onset >= T),
               (list(concat_ws('/', run_id, step, prompt_id, sample_id) ORDER BY run_id, step, prompt_id, sample_id)
                   FILTER (WHERE lost OR oT <> T OR onset < 0 OR onset >= T))[1:3]
        FROM r""").fetchall()[0]
    n, lost, other_len, null_onset, outside, examples = rows
    problems = []
    if lost:
        problems.append(f"{lost} of {n} rollouts have no row")
    if other_len:
        problems.append(f"{other_len} rollouts have another response_len there")
    if outside:
        problems.append(f"{outside} onsets lie outside their response (0 .. response_len - 1)")
    if problems:
        raise DatasetError(f"{path} does not belong to {src.name}: {'; '.join(problems)} (e.g. "
                           f"{', '.join(examples or [])}). An onsets file is made for one dataset: "
                           f"{_make_it(dataset)}")
    return OnsetInfo(path, int(window), int(width), int(n), int(n - null_onset), int(null_onset))


@dataclass(frozen=True)
class OnsetContrast:
    """The mean of a metric within the window after the onset minus before it, with a cluster-bootstrap interval.

    Attributes:
        before, after: token means over ``d`` in ``[-W, 0)`` and ``[0, W)`` (pooled over the cell's clusters).
        diff: ``after - before``; ci_low, ci_high: its expanded percentile interval at ``1 - alpha``.
        p_value: two-sided null-centred bootstrap p-value; p_floor: no resample reached |diff| (``p < 1/n``).
        verdict: one of :data:`CONTRAST_VERDICTS`; reason: why ``insufficient``.
        n_tokens_before, n_tokens_after, n_clusters: the sample; n_resamples, alpha, seed: how it was decided.
    """

    metric: str
    cell: str
    before: float
    after: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    n_tokens_before: int
    n_tokens_after: int
    n_clusters: int
    n_resamples: int
    alpha: float
    seed: int
    p_floor: bool = False
    reason: str = ""

    @property
    def p_text(self) -> str:
        return format_p(self.p_value, self.n_resamples, self.p_floor)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite numbers become None)."""
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}
        out["p_text"] = self.p_text
        return out

    def report(self) -> str:
        level = f"{round((1 - self.alpha) * 100)}%"
        head = (f"after - before onset {self.diff:+.4g} ({level} CI [{self.ci_low:+.4g}, {self.ci_high:+.4g}], "
                f"{self.p_text}; before {self.before:.4g}, after {self.after:.4g}; {self.n_clusters} clusters)")
        return f"{self.verdict}: {self.reason} ({head})" if self.reason else f"{self.verdict}: {head}"


def onset_contrast(rb: RolloutBins, metric: str, cell: Cell | None = None, *, n: int = 1000, seed: int = 0,
                   alpha: float = 0.05, min_clusters: int = 10) -> OnsetContrast:
    """Before-vs-after-onset contrast of ``metric`` in ``cell`` of onset bins (see the module docstring).

    The resamples are the cell's own (``SeedSequence([seed, crc32(cell.label)])``, as
    :meth:`~drift.stats.bins.RolloutBins.replicates`), so the contrast and the bins' intervals rest on the same
    resampled clusters.
    """
    if rb.spec.by != "onset":
        raise ValueError(f"onset_contrast needs bins by='onset', got by={rb.spec.by!r}")
    cell = cell or rb.headline
    st = rb.stats[cell]
    i = rb.metric_index(metric)
    after_B = rb.edges[:-1] >= 0  # 0 is an edge (BinSpec checks W % width == 0)
    sums = np.stack([st.sums[i][:, ~after_B].sum(axis=1), st.sums[i][:, after_B].sum(axis=1)], axis=1)
    counts = np.stack([st.counts[i][:, ~after_B].sum(axis=1), st.counts[i][:, after_B].sum(axis=1)], axis=1)
    present = counts.sum(axis=1) > 0
    sums, counts = sums[present], counts[present]
    n_k = int(present.sum())
    n_b, n_a = (int(v) for v in counts.sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        before, after = (float(v) for v in sums.sum(axis=0) / counts.sum(axis=0))
    diff = after - before
    base: dict[str, Any] = dict(metric=metric, cell=cell.label, before=before, after=after, diff=diff,
                                n_tokens_before=n_b, n_tokens_after=n_a, n_clusters=n_k, n_resamples=int(n),
                                alpha=float(alpha), seed=int(seed))
    lo = hi = p = math.nan
    floor = False
    if n > 0 and n_k > 0 and n_a > 0 and n_b > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cell.label.encode())]))
        reps = ratio_replicates(sums, counts, int(n), rng)
        d = reps[:, 1] - reps[:, 0]
        d = d[np.isfinite(d)]
        if len(d):
            a, b = expanded_percentile_interval(d[:, None], max(n_k, 1), 1.0 - alpha)
            lo, hi = float(a[0]), float(b[0])
            extreme = int(np.sum(np.abs(d - diff) >= abs(diff) - 1e-12))
            p = (1.0 + extreme) / (len(d) + 1.0)
            floor = extreme == 0
    base.update(ci_low=lo, ci_high=hi, p_value=p, p_floor=floor)
    if n_a == 0 or n_b == 0:
        return OnsetContrast(verdict="insufficient", reason="no tokens " + ("after" if n_a == 0 else "before") +
                             " the onset within the window", **base)
    if n_k < min_clusters:
        return OnsetContrast(verdict="insufficient", reason=f"{n_k} cluster(s) < --min-clusters {min_clusters}",
                             **base)
    if not math.isfinite(p):
        return OnsetContrast(verdict="insufficient", reason="no bootstrap resamples (n_boot = 0)", **base)
    if p < alpha:
        return OnsetContrast(verdict="higher_after" if diff > 0 else "lower_after", **base)
    return OnsetContrast(verdict="not_significant", **base)
