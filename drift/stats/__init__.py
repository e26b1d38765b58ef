"""drift.stats: metrics by position bin with cluster-bootstrap intervals, decay fits and direction tests.

A typical notebook session::

    from drift.stats import BinSpec, aggregate_bins, fit_bins, direction_test, plot_bins

    rb = aggregate_bins("runs/x", ["kl_reverse", "cum_abs_gap_frac"], BinSpec(by="rel", bins=20))
    table = rb.table(n_boot=1000, seed=0)          # tidy DataFrame: mean, ci_low, ci_high, n_rollouts, n_clusters...
    sel = fit_bins(rb, "cum_abs_gap_frac")          # five families compared by AIC; sel.best is a FitResult
    direction_test(rb, "kl_reverse")                # rises/falls/flat/inconclusive/insufficient, n_clusters...
    plot_bins(table, "kl_reverse"); sel.best.plot()

Clusters are prompts by default (``BinSpec(cluster="prompt")``; keys from :func:`drift.schema.cluster_key_columns`).

Modules: :mod:`~drift.stats.reader` (lazy, schema-checked sources), :mod:`~drift.stats.bins` (binning in DuckDB;
its queries in :mod:`~drift.stats.binsql`, the fixed-order fold of per-rollout sums in :mod:`~drift.stats.fold`,
``engine="ray"`` in :mod:`~drift.stats.ray_engine`),
:mod:`~drift.stats.bootstrap` (cluster bootstrap from sufficient statistics), :mod:`~drift.stats.models` (declared
curve families), :mod:`~drift.stats.fit` (the one fitting routine), :mod:`~drift.stats.results` (its frozen results),
:mod:`~drift.stats.direction`, :mod:`~drift.stats.pipeline` (the ``drift fit`` stage), :mod:`~drift.stats.plots`,
:mod:`~drift.stats.classes` (derived token classes for ``group_by``: ``teacher_entropy_zone``, ``low_student_logprob``,
``teacher_mass_zone``), :mod:`~drift.stats.onset_axis` (``by="onset"``: offsets from the divergence onset and the
before-vs-after contrast).
"""

from drift.stats.bins import (
    BIN_COLUMNS,
    BinSpec,
    Cell,
    RolloutBins,
    aggregate_bins,
    bin_metric,
    pooled_cell,
    pooled_rows,
)
from drift.stats.bootstrap import (
    BootstrapResult,
    cluster_bootstrap_ratio,
    expanded_percentile_interval,
    ratio_replicates,
    resample_counts,
)
from drift.stats.direction import (
    VERDICTS,
    DirectionResult,
    check_direction_method,
    direction_from_stats,
    direction_test,
)
from drift.stats.fit import FitResult, ModelSelection, fit_all, fit_model, half_point
from drift.stats.models import (
    MODELS,
    DecayModel,
    ExponentialDecay,
    HingeTrend,
    LinearTrend,
    LogisticDecay,
    PowerLawDecay,
    get_model,
)
from drift.stats.pipeline import FitConfig, FitRun, fit_bins, run_fit
from drift.stats.plots import plot_bins
from drift.stats.reader import ROLLOUT_KEY, TokenSource, open_tokens

__all__ = [
    "BIN_COLUMNS",
    "MODELS",
    "ROLLOUT_KEY",
    "VERDICTS",
    "BinSpec",
    "BootstrapResult",
    "Cell",
    "DecayModel",
    "DirectionResult",
    "ExponentialDecay",
    "FitConfig",
    "FitResult",
    "FitRun",
    "HingeTrend",
    "LinearTrend",
    "LogisticDecay",
    "ModelSelection",
    "PowerLawDecay",
    "RolloutBins",
    "TokenSource",
    "aggregate_bins",
    "bin_metric",
    "check_direction_method",
    "cluster_bootstrap_ratio",
    "direction_from_stats",
    "direction_test",
    "expanded_percentile_interval",
    "fit_all",
    "fit_bins",
    "fit_model",
    "get_model",
    "half_point",
    "open_tokens",
    "plot_bins",
    "pooled_cell",
    "pooled_rows",
    "ratio_replicates",
    "resample_counts",
    "run_fit",
]
