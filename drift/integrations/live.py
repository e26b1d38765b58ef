"""Live recording: sample and score the model being trained, into one drift dataset per step, without disturbing it.

:class:`LiveRecorder` is framework-agnostic: any training loop calls ``recorder.record(step, model, tokenizer)``
(the TRL / ``transformers`` callback, :class:`drift.integrations.trl.DriftCallback`, does so from its hooks). Each
call runs drift's own collector (:func:`drift.collect.pipeline.collect`: pure sampling, full-vocab scoring by
student and teacher) on a fixed prompt set and writes ``OUT/step-XXXXXX/``, a drift dataset whose rows carry
``step``. Sampling is seeded from ``(seed, step)``, so a step's rollouts are reproducible and steps differ by the
model only.

Training is left as it was (:func:`preserved`): the torch CPU / CUDA / MPS, numpy and Python global generators,
each module's train/eval flag and the tokenizer's padding and truncation sides are restored; sampling and scoring
run in eval mode under ``torch.inference_mode``; the optimizer is never touched. drift pads its own batches
(:mod:`drift.runtime.padding`): a left-padding tokenizer gives the same rows as a right-padding one. While a step
is recorded the model carries ``drift_live = {"step": N, ...}``, so the dataset names it "live model at step N"
(:func:`drift.models.model_identity`), not the fingerprint of the checkpoint it started from.

Several processes (``torch.distributed`` initialized, world size > 1): every rank samples and scores its share of
the prompts (``prompts[rank::world]``; each rank runs its own forward passes), the tables are gathered on rank 0
(``gather_object``, so no shared filesystem is needed) and rank 0 writes the one dataset. Replicated models (DDP)
work so; fully sharded ones (FSDP, ZeRO-3) need every rank in every forward pass, which ``generate`` only
guarantees with ``synced_gpus`` (not used by drift's sampler): not supported yet.

A step whose folder already holds a complete dataset is never written again (a resumed run, or ``on_train_end``
after the last ``every`` step); an incomplete one (a killed run) is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drift.collect.config import CHAT_MODES, TRUNCATE, CollectConfig, ScoringOptions
from drift.collect.prompts import PromptRecord, read_prompts
from drift.config import Checks, config_to_dict, opt
from drift.errors import DriftError, DriftWarning, InputFormatError

__all__ = ["LiveConfig", "LiveRecorder", "capture_rng", "is_complete", "preserved", "restore_rng", "step_dir"]

log = logging.getLogger(__name__)

ON_ERROR = ("warn", "raise")
DEFAULT_MAX_NEW_TOKENS = 512
TMP = ".live-tmp"


@dataclass(frozen=True)
class LiveConfig:
    """What a live recording samples and scores at each step (the collect settings minus models and prompts)."""

    out: str = opt("", "folder receiving one drift dataset per recorded step: OUT/step-XXXXXX")
    samples_per_prompt: int = opt(4, "rollouts sampled per prompt")
    max_new_tokens: int | None = opt(None, "response length cap; None = the trainer's max_completion_length when "
                                           f"it has one, else {DEFAULT_MAX_NEW_TOKENS}")
    temperature: float = opt(1.0, "sampling temperature (0 = greedy; 1 = the student's own distribution, as OPD)")
    top_p: float = opt(1.0, "nucleus sampling threshold (1 = full distribution)")
    seed: int = opt(0, "base seed; step N samples with derive_seed(seed, N)")
    max_prompts: int | None = opt(None, "use only the first N prompts")
    run_id: str | None = opt(None, "run identifier written to every row (default: OUT's name, or its parent's "
                                   "when OUT is named 'drift')")
    teacher_system_prompt: str | None = opt(None, "the teacher's (privileged) system turn")
    student_system_prompt: str | None = opt(None, "the student's system turn")
    chat_template: str = opt("auto", "auto, never or always apply the tokenizer's chat template", choices=CHAT_MODES)
    truncate_prompt: str = opt("none", "a prompt too long for the context: none = error, left = keep its end",
                               choices=TRUNCATE)
    verifier: str = opt("auto", "reward verifier: auto, none, answer, numeric, exact, world",
                        choices=("auto", "none", "answer", "numeric", "exact", "world"))
    gen_batch_size: int = opt(32, "prompts per generate() call")
    part_size: int = opt(256, "rollouts per parquet part")
    teacher_dtype: str | None = opt(None, "dtype of a teacher given as a path (default: the student's)")
    on_error: str = opt("warn", "a failed recording after the first: warn (training goes on, the step is missing) "
                                "or raise", choices=ON_ERROR)
    scoring: ScoringOptions = field(default_factory=lambda: ScoringOptions(progress=False),
                                    metadata={"help": "scoring options (as drift collect; progress bars off)"})

    def __post_init__(self) -> None:
        c = Checks("LiveConfig")
        c.check(bool(self.out), "out is required: the folder receiving OUT/step-XXXXXX datasets")
        c.positive("samples_per_prompt", self.samples_per_prompt)
        c.positive("max_new_tokens", self.max_new_tokens, allow_none=True)
        c.check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        c.check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        c.positive("max_prompts", self.max_prompts, allow_none=True)
        c.positive("gen_batch_size", self.gen_batch_size)
        c.positive("part_size", self.part_size)
        c.choice("chat_template", self.chat_template, CHAT_MODES)
        c.choice("truncate_prompt", self.truncate_prompt, TRUNCATE)
        c.choice("on_error", self.on_error, ON_ERROR)
        c.raise_if_any()

    @property
    def default_run_id(self) -> str:
        """``run_id``, else OUT's folder name (its parent's when OUT is ``RUN/drift``)."""
        if self.run_id:
            return self.run_id
        p = Path(self.out).resolve()
        return p.parent.name if p.name == "drift" and p.parent.name else p.name


# ------------------------------------------------------------------------------------------ training state
def capture_rng() -> dict[str, Any]:
    """The global random states sampling could move: torch CPU, CUDA (every device, once initialized), MPS,
    numpy's legacy global generator and Python's ``random``."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state(), "torch_initial_seed": torch.initial_seed()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        state["mps"] = mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` saved.

    CUDA not yet initialized when the state was captured: drift's ``torch.manual_seed`` queued a seed for its lazy
    initialization; the one the trainer queued (``torch.manual_seed(s)`` queues ``s``) is queued again.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif torch.cuda.is_available() and not torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(state["torch_initial_seed"])
    if "mps" in state:
        torch.mps.set_rng_state(state["mps"])


@contextlib.contextmanager
def preserved(*models: Any, tokenizer: Any = None, live: dict[str, Any] | None = None) -> Iterator[None]:
    """Run a block in eval mode with every global random state, module flag and tokenizer side put back after.

    Args:
        models: switched to eval mode; each module's own ``training`` flag is restored (a mix of modes survives).
            The first gets ``drift_live = live`` for the block (read by :func:`drift.models.model_identity`).
        tokenizer: its ``padding_side`` / ``truncation_side`` are restored.
        live: the live-model record, ``{"step": N, ...}``.
    """
    rng = capture_rng()
    flags = [(m, m.training) for model in models for m in model.modules()]
    sides = {k: getattr(tokenizer, k) for k in ("padding_side", "truncation_side") if hasattr(tokenizer, k)}
    threads = torch.get_num_threads()
    marked = models[0] if models and live is not None else None
    had_live, old_live = (hasattr(marked, "drift_live"), getattr(marked, "drift_live", None)) if marked else (0, 0)
    try:
        for model in models:
            model.eval()
        if marked is not None:
            marked.drift_live = dict(live or {})
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for k, v in sides.items():
            setattr(tokenizer, k, v)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if marked is not None:
            if had_live:
                marked.drift_live = old_live
            else:
                del marked.drift_live
        restore_rng(rng)


# ------------------------------------------------------------------------------------------------ layout
def step_dir(out: str | Path, step: int) -> Path:
    """``OUT/step-XXXXXX`` (six digits, so the folders sort in step order)."""
    return Path(out) / f"step-{int(step):06d}"


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished drift dataset (a manifest whose status is ``complete``)."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("status") == "complete"


def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialized process group."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _broadcast(value: Any, world: int) -> Any:
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any, rank: int, world: int) -> list[Any]:
    if world == 1:
        return [value]
    box: list[Any] | None = [None] * world if rank == 0 else None
    torch.distributed.gather_object(value, box, dst=0)
    return box or []


def _unwrap(model: Any) -> Any:
    """The causal LM to sample and score: the module inside a DistributedDataParallel / DataParallel wrapper; a
    PEFT model's base model, whose layers hold the injected adapters (untested here: peft is not installed)."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    if type(model).__module__.startswith("peft.") and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


# -------------------------------------------------------------------------------------------------- recorder
class LiveRecorder:
    """Record the live model at chosen steps: ``record(step, model, tokenizer)`` writes ``OUT/step-XXXXXX``.

    Args:
        teacher: the teacher causal LM, or a model spec (folder, ``.gguf``, ``smollm2``) loaded at the first
            recording on the student's device, in ``config.teacher_dtype`` or else the student's dtype.
        prompts: a drift prompts jsonl (:func:`~drift.collect.prompts.read_prompts`) or prompt records; read now, so
            a bad file fails before training starts.
        config: the sampling and scoring settings.
        tokenizer: used when :meth:`record` gets none.
        world: an oracle world (``world.json`` path or loaded world) adding ``oracle_*`` columns.

    Attributes:
        written: step -> dataset folder, for the steps this recorder wrote.
        seconds: step -> wall seconds the recording took (sampling, scoring, writing).
    """

    def __init__(self, teacher: Any, prompts: str | Path | Sequence[PromptRecord], config: LiveConfig, *,
                 tokenizer: Any = None, world: Any = None) -> None:
        self.config = config
        if isinstance(prompts, (str, Path)):
            self.prompts_source: str = str(prompts)
            records = read_prompts(prompts, limit=config.max_prompts)
        else:
            self.prompts_source = "prompt records"
            records = list(prompts)[: config.max_prompts]
        if not records:
            raise InputFormatError(f"no prompts in {self.prompts_source}; live recording needs at least one")
        self.prompts: list[PromptRecord] = records
        if isinstance(teacher, (str, Path)):
            from drift.models import resolve_model_path

            resolve_model_path(teacher)  # a wrong path fails now, not at the first recording
        self._teacher_spec = str(teacher) if isinstance(teacher, (str, Path)) else None
        self._teacher: Any = None if self._teacher_spec else teacher
        self._teacher_tokenizer: Any = None
        self.tokenizer = tokenizer
        if isinstance(world, (str, Path)):
            from drift.worlds import load_world

            world = load_world(world)
        self.world = world
        self.written: dict[int, Path] = {}
        self.seconds: dict[int, float] = {}
        self.n_recordings = 0

    def teacher_for(self, student: Any) -> Any:
        """The teacher model, loading a path on the student's device (and dtype) the first time."""
        if self._teacher is None:
            from drift.models import load_model, load_tokenizer

            p = next(student.parameters())
            dtype = self.config.teacher_dtype or str(p.dtype).replace("torch.", "")
            opts = self.config.scoring  # --teacher-device-map places a large teacher; else the student's device
            where = (opts.model_placement("teacher") if opts.teacher_device_map is not None
                     else {"device": str(p.device)})
            self._teacher = load_model(self._teacher_spec, dtype=dtype, **where)  # type: ignore[arg-type]
            self._teacher_tokenizer = load_tokenizer(self._teacher_spec, required=False)  # type: ignore[arg-type]
        return self._teacher

    def record(self, step: int, model: Any, tokenizer: Any = None, *, max_new_tokens: int | None = None,
               info: dict[str, Any] | None = None) -> Path | None:
        """Sample and score ``model`` as it is now into ``OUT/step-XXXXXX`` (every rank calls this together).

        Args:
            step: the training step the model is at (updates applied so far).
            model: the live student (left in the state it was found in).
            tokenizer: the student's tokenizer (default: the one given at construction).
            max_new_tokens: the cap when the config leaves it None (e.g. the trainer's completion length).
            info: extra JSON-able facts recorded in the dataset's ``config.json`` ``live`` block.

        Returns:
            The dataset folder on rank 0 when it was written now; None when the step was already complete, on other
            ranks, and after a failure that ``on_error="warn"`` turned into a :class:`~drift.errors.DriftWarning`.

        Raises:
            DriftError: the recording failed on some rank, and this is the first recording or ``on_error="raise"``.
        """
        rank, world = _dist()
        first = self.n_recordings == 0
        self.n_recordings += 1
        dest = step_dir(self.config.out, step)
        if _broadcast(is_complete(dest) if rank == 0 else None, world):
            log.info("drift: %s already holds a complete dataset; step %d is not recorded again", dest, step)
            return None
        t0 = time.perf_counter()
        student = _unwrap(model)
        tok = tokenizer if tokenizer is not None else self.tokenizer
        tok = getattr(tok, "tokenizer", tok)  # a processor: its tokenizer
        shard = self.prompts[rank::world]
        error: str | None = None
        result: dict[str, Any] | None = None
        try:
            if tok is None:
                raise InputFormatError("live recording needs the student's tokenizer: the trainer passed none "
                                       "(processing_class); give tokenizer= to the recorder")
            teacher = self.teacher_for(student)
            live = {"step": int(step), "rank": rank, "world_size": world, **(info or {})}
            models = (student,) if teacher is student else (student, teacher)
            with preserved(*models, tokenizer=tok, live=live):
                result = self._collect_shard(step, student, teacher, tok, shard, rank, max_new_tokens) if shard \
                    else None
        except Exception as exc:  # reported on every rank below, so no rank waits forever
            error = f"rank {rank}: {type(exc).__name__}: {exc}"
            log.debug("drift: live recording of step %d failed", step, exc_info=True)
        parts = _gather({"error": error, "result": result}, rank, world)
        out: Path | None = None
        if rank == 0:
            errors = [p["error"] for p in parts if p["error"]]
            if not errors:
                try:
                    out = self._write(dest, step, [p["result"] for p in parts], world, info)
                except Exception as exc:
                    errors.append(f"rank 0 (writing {dest}): {type(exc).__name__}: {exc}")
            error = "; ".join(errors) or None
        error = _broadcast(error, world)
        if error:
            message = f"drift: live recording of step {step} into {dest} failed: {error}"
            if first or self.config.on_error == "raise":
                raise DriftError(message + ("" if not first else " (the first recording, before any update, "
                                            "always stops the run)"))
            warnings.warn(message + "; training goes on without this step", DriftWarning, stacklevel=2)
            return None
        self.seconds[int(step)] = time.perf_counter() - t0
        if out is not None:
            self.written[int(step)] = out
            log.info("drift: recorded step %d into %s in %.1f s", step, out, self.seconds[int(step)])
        return out

    def collect_config(self, step: int, out: str, max_new_tokens: int | None) -> CollectConfig:
        """The :class:`CollectConfig` of one step's share (``step`` label, seed ``derive_seed(seed, step)``)."""
        from drift.collect.rollouts import derive_seed

        c = self.config
        return CollectConfig(
            out=out, student=f"live model at step {step}", teacher=self._teacher_spec or "teacher model",
            prompts=self.prompts_source, samples_per_prompt=c.samples_per_prompt,
            max_new_tokens=c.max_new_tokens or max_new_tokens or DEFAULT_MAX_NEW_TOKENS, temperature=c.temperature,
            top_p=c.top_p, seed=derive_seed(c.seed, step), step=int(step), run_id=c.default_run_id,
            teacher_system_prompt=c.teacher_system_prompt, student_system_prompt=c.student_system_prompt,
            chat_template=c.chat_template, truncate_prompt=c.truncate_prompt, verifier=c.verifier,
            gen_batch_size=c.gen_batch_size, part_size=c.part_size, if_exists="fail", scoring=c.scoring)

    def _collect_shard(self, step: int, student: Any, teacher: Any, tokenizer: Any, shard: list[PromptRecord],
                       rank: int, max_new_tokens: int | None) -> dict[str, Any]:
        """Collect this rank's prompts into a private temporary dataset and return its tables and records."""
        import pyarrow.parquet as pq

        from drift.collect.pipeline import collect

        root = Path(self.config.out) / TMP
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"step-{step:06d}-rank{rank}-"))
        try:
            cfg = self.collect_config(step, str(tmp), max_new_tokens)
            ds = collect(student, teacher, tokenizer, shard, cfg, teacher_tokenizer=self._teacher_tokenizer,
                         world=self.world)
            tables = [(pq.read_table(ds.root / p["rollouts"]), pq.read_table(ds.root / p["tokens"]))
                      for p in ds.manifest["parts"]]
            extra = {k: v for k, v in ds.manifest.items() if k == "self_check"}
            return {"rank": rank, "n_prompts": len(shard), "parts": tables, "config": ds.config,
                    "metadata": ds.metadata, "identity": ds.manifest.get("identity", {}), "extra": extra}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                root.rmdir()  # only when empty (no other rank's share left)

    def _write(self, dest: Path, step: int, results: list[dict[str, Any] | None], world: int,
               info: dict[str, Any] | None) -> Path:
        """Write every rank's parts as one dataset at ``dest`` (rank 0), replacing an incomplete one."""
        from drift.store import DatasetWriter

        done = [r for r in results if r is not None]
        head = done[0]
        config = dict(head["config"])
        config["config"] = {**config.get("config", {}), "out": str(dest)}
        config["live"] = {"step": int(step), "base_seed": self.config.seed, "world_size": world,
                          "prompts_per_rank": [r["n_prompts"] if r else 0 for r in results],
                          "settings": config_to_dict(self.config),
                          **(info or {})}
        parts = [(r["rank"], ro, to) for r in done for ro, to in r["parts"]]
        writer = DatasetWriter(dest, if_exists="overwrite" if (dest / "manifest.json").exists() else "fail",
                               config=config, n_parts=len(parts), metadata=head["metadata"],
                               identity={**head["identity"], "world_size": world})
        try:
            for i, (rank, rollouts, tokens) in enumerate(parts):
                writer.write_part(i, rollouts, tokens, info={"rank": rank})
        except BaseException:
            writer.close("interrupted")
            raise
        writer.close("complete", **head["extra"])
        return dest
