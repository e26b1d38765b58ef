"""The continuation probe: cut student rollouts at prefix ratios, let teacher and student continue, verify.

The paper's strongest diagnostic (§3.1): the teacher's accuracy when it continues from a student prefix falls as
the prefix grows, while the student's own continuation accuracy stays flat, so the teacher's advice on late tokens
is less actionable. drift measures it for any student/teacher pair and any verifier.

Cut points. For a rollout with response ``y_1..y_T``, let ``T'`` be the response length without a trailing stop
token (EOS): ``T' = T - 1`` when the last token is a stop token, else ``T``. The EOS is never part of a prefix.
For a ratio ``r`` in [0, 1] the probe keeps ``keep = floor(r * T' + 1e-9)`` tokens: ratio 0 continues from the bare
prompt, ratio 1 from the whole response minus its EOS (a finished response then only needs its EOS back).

Alignment. The teacher continues from ``teacher_prompt_ids + y[:keep]`` (its privileged prompt when the dataset
has one), the student from ``student_prompt_ids + y[:keep]``. Each samples ``k`` continuations with pure sampling
(the dataset's temperature / top-p unless overridden). The *verified* response is ``y[:keep] + continuation``
(ids; decoded with special tokens kept for text verifiers), judged against the task prompt
(``student_prompt_ids``: a privileged teacher prompt does not change what the right answer is).

Budget. ``budget="remaining"`` (default) gives a continuation ``max(1, N - keep)`` new tokens, where ``N`` is the
dataset's ``max_new_tokens``: a probed response is never longer than an original one could be, so late cuts are
not judged more leniently than the rollouts themselves. ``budget="full"`` gives every continuation ``N`` tokens.
Continuations are generated in batches of similar budget (then input length); a batch samples up to its largest
budget and each continuation is cut to its own budget afterwards (the first ``b`` tokens of a pure sample are a
pure sample with budget ``b``), so short budgets do not pay for long ones. A batch never runs a row past the
longest prompt + budget that some row of the part needs, so positions stay within what the rollouts themselves used
(plus one token, for an unfinished rollout cut at its end).

Predictors at the cut. Each row carries the token-table values at position ``t = keep`` of the rollout: the token
after the kept prefix, i.e. the distribution the continuation's first token is drawn from. ``rel_position`` =
t / T, ``cum_abs_gap`` C_t and ``prefix_logratio`` S_t (exclusive sums: exactly the kept prefix),
``teacher_entropy``, ``topk_overlap``, ``kl_reverse`` of the next-token distributions after the prefix. For a
finished rollout at ratio 1 that is the EOS position. Only an *unfinished* rollout cut at ``keep = T`` has no such
token: then ``rel_position = 1``, ``C_T = C_{T-1} + |A_{T-1}|`` and ``S_T = S_{T-1} + A_{T-1}`` (exact), and the
three distribution metrics are null (that distribution was never scored).

Seeds and resume. Work is split into parts of ``part_size`` rollouts; batch ``b`` of model ``m`` (0 teacher, 1
student) in part ``p`` is seeded with ``derive_seed(seed, p, m, b)``, so a probe resumed with
``if_exists="resume"`` equals an uninterrupted one (parts are written atomically by
:class:`~drift.store.DatasetWriter`), and a probe sharded under ``torchrun`` (:mod:`drift.runtime.distributed`)
equals a one-process one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from drift import __version__
from drift.collect.guards import check_stored_tokenizer, dataset_tokenizer_identity
from drift.collect.prompts import PromptRecord, read_prompts
from drift.collect.rollouts import Generated, derive_seed, sample_responses, stop_token_ids
from drift.config import config_to_dict, git_sha
from drift.errors import DatasetError
from drift.probe.config import ProbeConfig, resolve_config
from drift.progress import make_progress
from drift.runtime.checks import preflight_out
from drift.runtime.distributed import SINGLE, Dist, is_main, plan_parts, rank_device, session, write_parts
from drift.runtime.padding import pad_id_for
from drift.runtime.prompts import PromptStyle, render_record
from drift.store import DatasetWriter, DriftDataset, open_dataset
from drift.verifiers import get_verifier

__all__ = ["CONTINUATION_SCHEMA", "MODELS", "PREDICTOR_COLUMNS", "ProbeRun", "continuation_budget", "cut_points",
           "cut_predictors", "probe", "probe_from_config", "response_body_len", "run_probe"]

log = logging.getLogger(__name__)

MODELS = ("teacher", "student")
"""Model labels in the ``model`` column; the index is the model's seed component."""

PREDICTOR_COLUMNS = ("rel_position", "cum_abs_gap", "prefix_logratio", "teacher_entropy", "topk_overlap",
                     "kl_reverse")
"""Token-table values copied onto each row at the cut position t = keep."""

CONTINUATION_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("step", pa.int64()), pa.field("prompt_id", pa.string()),
    pa.field("sample_id", pa.int64()), pa.field("ratio", pa.float64()), pa.field("keep", pa.int32()),
    pa.field("response_len", pa.int32()), pa.field("body_len", pa.int32()), pa.field("model", pa.string()),
    pa.field("continuation", pa.int32()), pa.field("continuation_ids", pa.list_(pa.int32())),
    pa.field("continuation_len", pa.int32()), pa.field("budget", pa.int32()), pa.field("finished", pa.bool_()),
    pa.field("truncated", pa.bool_()), pa.field("success", pa.float64()),
    pa.field("rollout_reward", pa.float64()),
    *(pa.field(c, pa.float64()) for c in PREDICTOR_COLUMNS),
])
"""One row per (rollout, ratio, model, continuation). ``response_len`` is T (EOS included), ``body_len`` T'."""

# Settings that do not change the rows (may differ on resume).
_NOT_IDENTITY = ("if_exists", "progress", "num_threads", "n_boot", "ci", "out", "self_check", "chunk_size",
                 "max_batch_tokens", "topk", "score_temperature", "cluster", "min_clusters")  # analysis-only


# ------------------------------------------------------------------------------------------------ cut geometry
def response_body_len(response_ids: Sequence[int], stop_ids: Sequence[int]) -> int:
    """T': the response length without a trailing stop token (the EOS is never part of a prefix)."""
    n = len(response_ids)
    return n - 1 if n > 0 and int(response_ids[-1]) in set(int(s) for s in stop_ids) else n


def cut_points(body_len: int, ratios: Sequence[float]) -> list[int]:
    """Tokens kept at each ratio: ``floor(ratio * T' + 1e-9)`` (0 -> bare prompt, 1 -> all of T')."""
    return [min(int(body_len), math.floor(float(r) * int(body_len) + 1e-9)) for r in ratios]


def continuation_budget(keep: int, max_new_tokens: int, budget: str = "remaining") -> int:
    """New tokens a continuation may sample: ``max(1, N - keep)`` (``remaining``) or ``N`` (``full``)."""
    if budget == "full":
        return int(max_new_tokens)
    if budget != "remaining":
        raise ValueError(f"budget must be 'remaining' or 'full', got {budget!r}")
    return max(1, int(max_new_tokens) - int(keep))


# ------------------------------------------------------------------------------------------------ inputs
def _read_rollouts(dataset: DriftDataset, max_rollouts: int | None) -> list[dict[str, Any]]:
    table = dataset.read("rollouts")
    want = ["run_id", "step", "prompt_id", "sample_id", "prompt", "student_prompt_ids", "teacher_prompt_ids",
            "response_ids", "finished", "reward", "answer", "source_prompt"]
    table = table.select([c for c in want if c in table.column_names])
    if max_rollouts is not None:
        table = table.slice(0, max_rollouts)
    rows = table.to_pylist()
    if not rows:
        raise DatasetError(f"{dataset.root} holds no rollouts to probe")
    return rows


def _records(rows: Sequence[dict[str, Any]], prompts_path: str | None, world: Any | None) -> dict[str, PromptRecord]:
    """One PromptRecord per prompt id, for the verifier: from the prompt file when it exists, else rebuilt."""
    by_id: dict[str, PromptRecord] = {}
    if prompts_path and Path(prompts_path).is_file():
        by_id = {r.id: r for r in read_prompts(prompts_path)}
    elif prompts_path:
        log.warning("prompt file %s not found; rebuilding prompts from the dataset%s", prompts_path,
                    " (every prompt taken as the world's task)" if world is not None else "")
    out: dict[str, PromptRecord] = {}
    for r in rows:
        pid = str(r["prompt_id"])
        if pid in out:
            continue
        if pid in by_id:
            rec = by_id[pid]
            if r.get("answer") is not None and rec.answer is None:
                rec = PromptRecord(rec.id, rec.prompt, r["answer"], rec.teacher_prompt, rec.task, rec.extra)
            out[pid] = rec
            continue
        src = r.get("source_prompt")
        value = json.loads(src) if src else (r.get("prompt") or "")
        prompt = value if isinstance(value, str) else tuple(value)
        out[pid] = PromptRecord(id=pid, prompt=prompt, answer=r.get("answer"),
                                task=getattr(world, "name", None) if world is not None else None)
    return out


def _teacher_prompts(rows: list[dict[str, Any]], records: dict[str, PromptRecord], tokenizer: Any,
                     system_prompt: str | None, chat: str) -> None:
    """Re-render each row's teacher prompt with ``system_prompt`` as the teacher's system turn (in place)."""
    cache: dict[str, list[int]] = {}
    style = PromptStyle(chat, None, system_prompt)
    for r in rows:
        pid = str(r["prompt_id"])
        if pid not in cache:
            cache[pid] = render_record(records[pid], tokenizer, style).teacher_ids
        r["teacher_prompt_ids"] = cache[pid]


def cut_predictors(dataset: DriftDataset, cuts: pd.DataFrame) -> pd.DataFrame:
    """Token-table values at each cut (see the module docstring), in the order of ``cuts``.

    Args:
        dataset: the probed dataset (its ``tokens`` table).
        cuts: columns ``run_id, prompt_id, sample_id, keep, response_len``.

    Returns:
        A DataFrame with :data:`PREDICTOR_COLUMNS` (NaN where undefined), one row per cut.
    """
    n = len(cuts)
    out = pd.DataFrame({c: np.full(n, np.nan) for c in PREDICTOR_COLUMNS})
    if n == 0:
        return out
    if not dataset.files("tokens"):
        log.warning("%s has no tokens table: predictors at the cut are null (no AUROC)", dataset.root)
        return out
    keep = cuts["keep"].to_numpy(np.int64)
    T = cuts["response_len"].to_numpy(np.int64)
    past = keep >= T
    query = pd.DataFrame({"cut": np.arange(n), "run_id": cuts["run_id"].astype(str).to_numpy(),
                          "prompt_id": cuts["prompt_id"].astype(str).to_numpy(),
                          "sample_id": cuts["sample_id"].to_numpy(np.int64),
                          "pos": np.where(past, T - 1, keep)})
    query = query[query["pos"] >= 0]
    con = dataset.duckdb()
    con.register("probe_cuts", query)
    found = con.execute(
        "SELECT c.cut, t.rel_position, t.cum_abs_gap, t.prefix_logratio, t.advantage, t.teacher_entropy, "
        "t.topk_overlap, t.kl_reverse FROM probe_cuts c JOIN tokens t ON t.run_id = c.run_id AND "
        "t.prompt_id = c.prompt_id AND t.sample_id = c.sample_id AND t.position = c.pos").df()
    con.close()
    if found["cut"].duplicated().any():
        raise DatasetError(f"{dataset.root}/tokens holds several rows per (run_id, prompt_id, sample_id, position) "
                           "(several steps in one dataset?); probe a dataset with one scoring step")
    if len(found) < len(query):
        log.warning("%d of %d cuts have no token row; their predictors are null", len(query) - len(found),
                    len(query))
    idx = found["cut"].to_numpy(np.int64)
    for c in PREDICTOR_COLUMNS:
        out.loc[idx, c] = found[c].to_numpy(np.float64)
    p = idx[past[idx]]
    if len(p):
        adv = found["advantage"].to_numpy(np.float64)[past[idx]]
        out.loc[p, "rel_position"] = 1.0
        out.loc[p, "cum_abs_gap"] = out.loc[p, "cum_abs_gap"].to_numpy() + np.abs(adv)
        out.loc[p, "prefix_logratio"] = out.loc[p, "prefix_logratio"].to_numpy() + adv
        for c in ("teacher_entropy", "topk_overlap", "kl_reverse"):
            out.loc[p, c] = np.nan
    return out


# ------------------------------------------------------------------------------------------------ generation
def _generate(model: Any, prompts: Sequence[list[int]], budgets: Sequence[int], *, stop_ids: Sequence[int],
              pad_id: int, temperature: float, top_p: float, batch_size: int, seed: int,
              on_batch: Callable[[int], None] | None = None) -> list[Generated]:
    """Sample one continuation per prompt within its own budget (batches of similar budget; see the docstring)."""
    stops = set(int(s) for s in stop_ids)
    order = sorted(range(len(prompts)), key=lambda i: (-int(budgets[i]), len(prompts[i]), i))  # less padding
    # No row may run past the longest length some row legitimately needs (prompt + its budget): a batch closes
    # before a row whose prompt + the batch's cap would exceed it (models with absolute positions stay in range).
    limit = max((len(p) + int(b) for p, b in zip(prompts, budgets, strict=True)), default=0)
    batches: list[list[int]] = []
    for i in order:
        if not batches or len(batches[-1]) >= batch_size or len(prompts[i]) + int(budgets[batches[-1][0]]) > limit:
            batches.append([])
        batches[-1].append(i)
    out: list[Generated | None] = [None] * len(prompts)
    for b, idx in enumerate(batches):
        cap = int(budgets[idx[0]])
        gens = sample_responses(model, [prompts[i] for i in idx], stop_ids=stop_ids, pad_id=pad_id,
                                max_new_tokens=cap, temperature=temperature, top_p=top_p, batch_size=len(idx),
                                seed=derive_seed(seed, b))
        for i, g in zip(idx, gens, strict=True):
            ids = list(g.response_ids)[: int(budgets[i])]
            finished = bool(ids) and ids[-1] in stops
            out[i] = Generated(ids, finished, truncated=not finished and len(ids) >= int(budgets[i]))
        if on_batch is not None:
            on_batch(len(idx))
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class _Setup:
    student: Any
    teacher: Any
    tokenizer: Any
    config: ProbeConfig
    stops: list[int]
    pad_id: int
    verifier: Any
    records: dict[str, PromptRecord]
    step: int


def _part_table(setup: _Setup, part: int, rows: list[dict[str, Any]], cuts: list[list[int]],
                preds: pd.DataFrame, on_batch: Callable[[int], None] | None) -> pa.Table:
    """Generate, verify and tabulate every continuation of one part's rollouts."""
    cfg = setup.config
    k, ratios = cfg.continuations, cfg.ratios
    cols: dict[str, list[Any]] = {f.name: [] for f in CONTINUATION_SCHEMA}
    prefixes = [[list(r["response_ids"][:keep]) for keep in keeps] for r, keeps in zip(rows, cuts, strict=True)]
    budgets = [continuation_budget(keep, cfg.max_new_tokens, cfg.budget)  # type: ignore[arg-type]
               for keeps in cuts for keep in keeps for _ in range(k)]
    for m, label in enumerate(MODELS):
        model = setup.teacher if label == "teacher" else setup.student
        key = "teacher_prompt_ids" if label == "teacher" else "student_prompt_ids"
        inputs = [list(r[key]) + prefixes[i][j] for i, r in enumerate(rows) for j in range(len(ratios))
                  for _ in range(k)]
        gens = _generate(model, inputs, budgets, stop_ids=setup.stops, pad_id=setup.pad_id,
                         temperature=cfg.temperature, top_p=cfg.top_p,  # type: ignore[arg-type]
                         batch_size=cfg.gen_batch_size, seed=derive_seed(cfg.seed, part, m), on_batch=on_batch)
        verified = [prefixes[n // (k * len(ratios))][(n // k) % len(ratios)] + g.response_ids
                    for n, g in enumerate(gens)]
        texts = setup.tokenizer.batch_decode(verified, skip_special_tokens=False)
        n = 0
        for i, r in enumerate(rows):
            rec = setup.records[str(r["prompt_id"])]
            for j, ratio in enumerate(ratios):
                cut_row = i * len(ratios) + j
                for c in range(k):
                    g = gens[n]
                    success = setup.verifier(rec, texts[n], r["student_prompt_ids"], verified[n])
                    step = setup.step if r.get("step") is None else int(r["step"])
                    vals = {"run_id": r["run_id"], "step": step, "prompt_id": str(r["prompt_id"]),
                            "sample_id": int(r["sample_id"]), "ratio": float(ratio), "keep": cuts[i][j],
                            "response_len": len(r["response_ids"]),
                            "body_len": response_body_len(r["response_ids"], setup.stops), "model": label,
                            "continuation": c, "continuation_ids": g.response_ids,
                            "continuation_len": len(g.response_ids), "budget": budgets[n], "finished": g.finished,
                            "truncated": g.truncated, "success": None if success is None else float(success),
                            "rollout_reward": r.get("reward")}
                    for p in PREDICTOR_COLUMNS:
                        v = preds[p].iat[cut_row]
                        vals[p] = None if not np.isfinite(v) else float(v)
                    for name, v in vals.items():
                        cols[name].append(v)
                    n += 1
    return pa.Table.from_pydict(cols, schema=CONTINUATION_SCHEMA)


# ------------------------------------------------------------------------------------------------ the probe
def probe(student: Any, teacher: Any, tokenizer: Any, dataset: DriftDataset | str, config: ProbeConfig, *,
          world: Any | None = None, teacher_tokenizer: Any | None = None, dist: Dist | None = None) -> DriftDataset:
    """Continue ``dataset``'s rollouts from prefixes with ``teacher`` and ``student``; write ``config.out``.

    Args:
        student, teacher: causal LMs (eval mode; may be the same object for a self-teacher).
        tokenizer: the student's tokenizer (ids are decoded with it for text verifiers).
        dataset: the probed drift dataset (or its folder).
        config: the probe config; ``None`` fields are resolved from the dataset's ``config.json``.
        world: an oracle world for the ``world`` / ``auto`` verifier.
        teacher_tokenizer: checked against ``tokenizer`` (default: the same).
        dist: this process's rank in a sharded run (:func:`drift.runtime.distributed.session`; every rank calls
            ``probe`` with the same arguments and continues its share of the parts). Default: a plain run.

    Returns:
        The written probe dataset (table ``continuations``, see :data:`CONTINUATION_SCHEMA`), opened (every rank).

    Raises:
        DistributedError: another rank failed (the parts finished so far are kept).
    """
    from drift.collect.guards import check_pair
    from drift.models import model_identity, tokenizer_hash

    dist = dist or SINGLE
    ds = dataset if isinstance(dataset, DriftDataset) else open_dataset(dataset)
    cfg = resolve_config(config, ds.config)
    if cfg.scoring.num_threads is not None:
        torch.set_num_threads(cfg.scoring.num_threads)
    check_pair(student, teacher, tokenizer, teacher_tokenizer)
    rows = _read_rollouts(ds, cfg.max_rollouts)
    check_stored_tokenizer(dataset_tokenizer_identity(ds.config), tokenizer, rows, where=f"dataset {ds.root}")
    records = _records(rows, cfg.prompts, world)
    if cfg.teacher_system_prompt is not None:
        _teacher_prompts(rows, records, tokenizer, cfg.teacher_system_prompt, cfg.chat_template or "auto")
    stops = stop_token_ids(tokenizer, student)
    stops += [s for s in stop_token_ids(tokenizer, teacher) if s not in stops]
    pad_id = pad_id_for(tokenizer, stops)
    cuts = [cut_points(response_body_len(r["response_ids"], stops), cfg.ratios) for r in rows]
    cut_frame = pd.DataFrame({"run_id": [r["run_id"] for r in rows for _ in cfg.ratios],
                              "prompt_id": [str(r["prompt_id"]) for r in rows for _ in cfg.ratios],
                              "sample_id": [int(r["sample_id"]) for r in rows for _ in cfg.ratios],
                              "keep": [kp for keeps in cuts for kp in keeps],
                              "response_len": [len(r["response_ids"]) for r in rows for _ in cfg.ratios]})
    preds = cut_predictors(ds, cut_frame)
    setup = _Setup(student, teacher, tokenizer, cfg, stops, int(pad_id),
                   get_verifier(cfg.verifier or "auto", world=world, tokenizer=tokenizer), records,
                   int((ds.config.get("config") or {}).get("step") or 0))

    per = cfg.part_size
    parts = list(range(0, len(rows), per))
    flat = {k: v for k, v in {**config_to_dict(cfg), **config_to_dict(cfg.scoring)}.items() if k != "scoring"}
    inputs_hash = hashlib.sha256(json.dumps(
        [[r["run_id"], r["prompt_id"], r["sample_id"], list(r["response_ids"]), list(r["teacher_prompt_ids"])]
         for r in rows]).encode()).hexdigest()[:16]
    identity = {k: v for k, v in flat.items() if k not in _NOT_IDENTITY}
    identity.update(command="probe", inputs=inputs_hash, tokenizer=tokenizer_hash(tokenizer),
                    student=model_identity(student).get("fingerprint"),
                    teacher=model_identity(teacher).get("fingerprint"))
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0, "max_new_tokens": cfg.max_new_tokens,
                "budget": cfg.budget, "continuations": cfg.continuations, "seed": cfg.seed, "stop_ids": stops,
                "pad_id": int(pad_id)}
    payload = {"command": "probe", "config_type": type(cfg).__name__, "config": config_to_dict(cfg),
               "dataset": {"path": str(ds.root), "identity": ds.manifest.get("identity"),
                           "n_rollouts": ds.manifest.get("n_rollouts")},
               "models": {"student": model_identity(student, cfg.student), "teacher": model_identity(teacher,
                                                                                                      cfg.teacher)},
               "tokenizer": {"hash": tokenizer_hash(tokenizer), "eos": tokenizer.eos_token},
               "world": world.to_dict() if world is not None else None, "sampling": sampling,
               "n_rollouts": len(rows), "drift_version": __version__, "git_sha": git_sha(),
               "torch_version": torch.__version__}
    writer, plan = plan_parts(dist, lambda: DatasetWriter(
        cfg.out, if_exists=cfg.if_exists, config=payload, n_parts=len(parts),  # type: ignore[arg-type]
        metadata={"probe": True, "ratios": list(cfg.ratios), "sampling": sampling, "dataset": str(ds.root),
                  "drift_version": __version__},
        identity=identity, tables=("continuations",)))
    n_pending = sum(len(rows[parts[p]: parts[p] + per]) for p in plan.share(dist))
    bar = make_progress(n_pending * len(cfg.ratios) * cfg.continuations * 2, "probe: continuations", unit="cont",
                        enabled=cfg.scoring.progress and dist.is_main)

    def make(p: int) -> dict[str, pa.Table]:
        lo = parts[p]
        bar.set_postfix_str(f"part {p + 1}/{len(parts)}")
        sub = preds.iloc[lo * len(cfg.ratios): (lo + per) * len(cfg.ratios)].reset_index(drop=True)
        return {"continuations": _part_table(setup, p, rows[lo: lo + per], cuts[lo: lo + per], sub, bar.update)}

    try:
        write_parts(dist, plan, writer, make)
    except BaseException:
        if writer is not None:
            writer.close("interrupted")
        bar.close()
        raise
    bar.close()
    with dist.together("closing the manifest (rank 0)"):
        if writer is not None:
            writer.close("complete")
    return open_dataset(plan.root)


def _load(cfg: ProbeConfig, dist: Dist) -> tuple[Any, Any, Any, Any, Any]:
    from drift.runtime.loading import load_pair

    with dist.together("loading the models"):
        mp = load_pair(cfg.student, cfg.teacher, tokenizer=cfg.tokenizer,  # type: ignore[arg-type]
                       device=rank_device(cfg.scoring.device, dist), dtype=cfg.scoring.dtype,
                       num_threads=cfg.scoring.num_threads, world=cfg.world, **cfg.scoring.placement())
    return mp.student, mp.teacher, mp.tokenizer, mp.teacher_tokenizer, mp.world


def probe_from_config(config: ProbeConfig) -> DriftDataset:
    """Load the models, tokenizer and world named in ``config`` (or in the dataset) and run :func:`probe`.

    Under ``torchrun`` every rank loads the models and continues its share of the parts.
    """
    ds = open_dataset(config.dataset)
    cfg = resolve_config(config, ds.config)
    preflight_out(cfg.out, cfg.if_exists)  # type: ignore[arg-type]  # fail before loading models
    with session(cfg.scoring.device) as dist:
        student, teacher, tokenizer, teacher_tok, world = _load(cfg, dist)
        return probe(student, teacher, tokenizer, ds, cfg, world=world, teacher_tokenizer=teacher_tok, dist=dist)


@dataclass(frozen=True)
class ProbeRun:
    """A finished probe: its continuations dataset and the analysis (already written to ``dataset.root``)."""

    dataset: DriftDataset
    analysis: Any  # drift.probe.analysis.ProbeAnalysis


def run_probe(config: ProbeConfig) -> ProbeRun:
    """The ``drift probe`` stage: :func:`probe_from_config`, then analyze and write ``accuracy.parquet`` and
    ``auroc.json`` beside the ``continuations/`` parts and ``config.json``.

    Under ``torchrun`` every rank returns the same analysis; only rank 0 writes it.
    """
    from drift.probe.analysis import analyze

    ds = probe_from_config(config)
    analysis = analyze(ds, n_boot=config.n_boot, ci=config.ci, seed=config.seed, cluster=config.cluster,
                       min_clusters=config.min_clusters)
    if is_main():
        analysis.write(ds.root)
    return ProbeRun(ds, analysis)
