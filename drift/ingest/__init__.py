"""``drift import``: read the per-token logs training frameworks already write into ordinary drift datasets.

Sources (``drift import SOURCE PATH --out OUT``):

- ``slime``: ``--dump-details DIR`` (``train_data/{rollout_id}.pt`` with student, sampler and teacher log-probs);
- ``nemo-rl``: ``log_dir/train_data_step{N}.jsonl`` (student and sampler log-probs; the teacher only with
  ``--advantages distillation``);
- ``completions``: text dumps of TRL, verl and ms-swift (``--format``), re-tokenized and re-scored with
  ``--student`` / ``--teacher`` (full support, like ``drift score``);
- ``vllm``: a vLLM teacher's ``prompt_logprobs`` merged into an existing dataset's rollouts (top-k support);
- ``tokens``: drift's generic jsonl / parquet of token ids and log-probs (:mod:`drift.ingest.tokens`).

Every import writes the same tables as ``drift collect``, with parquet metadata ``support`` (``full``, ``topk`` or
``sampled``) and only the columns its source really holds; the teacher-dependent columns are recomputed with
drift's own signs. :func:`import_from_config` is the entry point the CLI calls; :mod:`drift.ingest.run` holds the
shared streaming, resume and checks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from drift.ingest.config import IMPORT_SOURCES, ImportConfig
from drift.lazy import lazy_exports

if TYPE_CHECKING:
    from drift.ingest.records import ImportedRollout
    from drift.ingest.run import SourcePlan, run_import

__all__ = ["IMPORT_SOURCES", "ImportConfig", "ImportedRollout", "SourcePlan", "import_from_config", "open_source",
           "run_import"]

# Re-exports imported on first use: drift.ingest.run loads torch, and `drift import --help` must not.
_LAZY: dict[str, str] = {"ImportedRollout": "records", "SourcePlan": "run", "run_import": "run"}


__getattr__, __dir__ = lazy_exports("drift.ingest", _LAZY, globals(), __all__)

# source -> (module, function returning its SourcePlan from an ImportConfig)
_OPENERS: dict[str, tuple[str, str]] = {
    "slime": ("drift.ingest.slime", "open_slime"),
    "nemo-rl": ("drift.ingest.nemo_rl", "open_nemo_rl"),
    "vllm": ("drift.ingest.vllm", "open_vllm"),
    "tokens": ("drift.ingest.tokens", "open_tokens"),
}


def open_source(cfg: ImportConfig) -> SourcePlan:
    """The :class:`SourcePlan` of ``cfg.source`` (files found, tokenizer resolved; nothing imported yet)."""
    module, name = _OPENERS[cfg.source]
    return getattr(importlib.import_module(module), name)(cfg)


def _check_models(cfg: ImportConfig) -> tuple[Any, Any]:
    from drift.models import load_model

    if cfg.check_rollouts == 0:
        return None, None
    opts = cfg.scoring
    student = load_model(cfg.student, dtype=opts.dtype, **opts.model_placement("student")) if cfg.student else None
    teacher = load_model(cfg.teacher, dtype=opts.dtype, **opts.model_placement("teacher")) if cfg.teacher else None
    return student, teacher


def import_from_config(cfg: ImportConfig) -> Any:
    """Run the import ``cfg`` describes and return the written :class:`~drift.store.DriftDataset`.

    The output folder and the source are checked before any model is loaded.
    """
    from drift.runtime.checks import preflight_out
    from drift.runtime.loading import set_threads

    preflight_out(cfg.out, cfg.if_exists)
    set_threads(cfg.scoring.num_threads)
    if cfg.source == "completions":
        from drift.ingest.completions import import_completions

        return import_completions(cfg)
    from drift.ingest.run import run_import

    plan = open_source(cfg)
    student, teacher = _check_models(cfg)
    return run_import(plan, cfg, student=student, teacher=teacher)
