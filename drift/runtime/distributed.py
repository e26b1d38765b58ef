"""Sharded runs under ``torchrun``: ranks, a control channel, collective error checks and the part loop.

``torchrun --nproc-per-node N -m drift collect ...`` (likewise ``score`` and ``probe``) starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`session` reads them, starts ``torch.distributed`` (gloo on
CPU, nccl when the models go to CUDA; each rank then uses ``cuda:LOCAL_RANK``) and yields a :class:`Dist`. Without
those variables (or with ``WORLD_SIZE=1``) it yields :data:`SINGLE` and nothing is started: a plain run is the
one-rank case of the same code.

Every message between ranks is a small Python object (a part plan, a manifest entry, an error text) sent over a
gloo group (:attr:`Dist.group`, a separate one when the main backend is nccl), so control traffic never touches
the accelerators.

**Parts.** Rank 0 plans (:func:`plan_parts`): it opens the :class:`~drift.store.DatasetWriter` (the ``--if-exists``
checks, the resume identity check, damaged parts dropped, unlisted files removed) and broadcasts the pending part
indices. :func:`write_parts` then works in rounds: in round ``r`` rank ``k`` makes pending part ``r * N + k``.
A part's rows depend on its index and the seed only (``derive_seed(seed, part)``), so the dataset equals a
one-process run with the same seed, whatever N. Each rank writes its own part files atomically
(:class:`~drift.store.PartFiles`); rank 0 lists them in the one manifest after every round, so a crash anywhere
leaves every listed part complete and ``--if-exists resume`` redoes exactly the unlisted ones (with any N).
The dataset folder reaches the disk only once some rank has a part to write, as in a one-process run.

**Errors.** A rank whose part fails does not leave the others waiting: the round ends with every rank's outcome
gathered, the parts that did succeed are written and listed, and then every rank stops, the failed rank with its
own exception and the others with a :class:`DistributedError` naming the rank, the part and the error. A rank that
dies outright (killed, out of memory) is torchrun's to handle: it stops the others.

The gloo timeout (:data:`TIMEOUT_S`, env ``DRIFT_DIST_TIMEOUT_S``) bounds how long a rank waits for the others in
one round, i.e. about one part's work; the default is generous for large teachers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from drift.errors import DeviceError, DistributedError, DriftError
from drift.store import DatasetWriter, PartFiles

__all__ = ["SINGLE", "TIMEOUT_S", "Dist", "DistributedError", "PartPlan", "env_rank", "is_main", "launched",
           "plan_parts", "rank_device", "session", "write_parts"]

log = logging.getLogger(__name__)

_MAX_MESSAGE = 4000  # characters of another rank's error carried in a DistributedError


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


TIMEOUT_S = _env_int("DRIFT_DIST_TIMEOUT_S", 6 * 3600)
"""Seconds a rank waits for the others at one collective (about one part's work) before gloo gives up."""


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def env_rank() -> int:
    """This process's global rank: the initialized process group's, else ``RANK`` (0 without torchrun)."""
    import sys

    dist = getattr(sys.modules.get("torch"), "distributed", None)  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return _env_int("RANK", 0)


def is_main() -> bool:
    """Whether this process is rank 0 (always true without torchrun): the one that prints and writes summaries."""
    return env_rank() == 0


@dataclass(frozen=True)
class Dist:
    """This process's place in a sharded run; :data:`SINGLE` (rank 0 of 1) is a plain run.

    Attributes:
        rank: the global rank (0 … world_size - 1).
        world_size: the number of processes.
        local_rank: the rank on this node (its CUDA device under ``--device auto``/``cuda``).
        group: the gloo process group that carries drift's messages (None: the default group).
        backend: the default group's backend (``gloo`` or ``nccl``; empty for a plain run).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = field(default=None, compare=False, repr=False)
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (plans, writes the manifest and config.json, shows progress)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.group)
        return out

    def check(self, error: BaseException | None, what: str, hint: str = "", label: str = "") -> None:
        """Gather every rank's outcome of ``what``; if any rank failed, stop every rank.

        The failed rank re-raises its own ``error``; the others raise :class:`DistributedError` quoting it
        (prefixed with that rank's ``label``, e.g. the part it was making).
        """
        mine = _describe(error)
        if mine is not None and label:
            mine = f"{label}: {mine}"
        failures = [(r, m) for r, m in enumerate(self.all_gather(mine)) if m is not None]
        if error is not None:
            raise error
        if failures:
            raise DistributedError(_failure_message(what, failures, hint))

    @contextlib.contextmanager
    def together(self, what: str, hint: str = "") -> Iterator[None]:
        """Run the block on every rank and stop all of them if it fails on any (see :meth:`check`).

        A plain run just runs the block. ``KeyboardInterrupt`` and other non-``Exception`` exits pass through.
        """
        if not self.enabled:
            yield
            return
        error: Exception | None = None
        try:
            yield
        except Exception as exc:  # every failure is reported to the other ranks, then re-raised
            error = exc
        self.check(error, what, hint)


SINGLE = Dist()
"""A plain, one-process run."""


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + " …"


def _failure_message(what: str, failures: list[tuple[int, str]], hint: str) -> str:
    lines = "\n".join(f"  - rank {r}: {m}" for r, m in failures)
    return (f"{what} failed on {len(failures)} rank(s), so every rank stopped:\n{lines}"
            + (f"\n{hint}" if hint else ""))


def _wants_cuda(device: str) -> bool:
    import torch

    return (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda")


def rank_device(device: str, dist: Dist) -> str:
    """The device this rank loads its models on: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` in a sharded CUDA run.

    An explicit ``cuda:N`` (or ``cpu``) is kept as given on every rank.

    Raises:
        DeviceError: a sharded run starts more processes on this node than it has CUDA devices.
    """
    import torch

    if not dist.enabled or device not in ("auto", "cuda") or not _wants_cuda(device):
        return device
    if not torch.cuda.is_available():
        return device  # resolve_device explains that --device cuda needs CUDA
    n = torch.cuda.device_count()
    if dist.local_rank >= n:
        raise DeviceError(f"torchrun started more processes on this node than it has CUDA devices (local rank "
                          f"{dist.local_rank}, {n} device(s)); pass --nproc-per-node {n} or less, or --device cpu.")
    return f"cuda:{dist.local_rank}"


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Dist]:
    """The :class:`Dist` of this process; starts (and finally ends) ``torch.distributed`` under torchrun.

    An already initialized process group (a script that started its own) is used as it is and left running.

    Args:
        device: the requested ``--device``: nccl when it resolves to CUDA, else gloo.

    Raises:
        DistributedError: torch.distributed is unavailable or could not start (the cause is chained).
    """
    if not launched():
        import sys

        dist_mod = getattr(sys.modules.get("torch"), "distributed", None)
        if dist_mod is None or not dist_mod.is_available() or not dist_mod.is_initialized() \
                or dist_mod.get_world_size() == 1:
            yield SINGLE
            return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run drift without torchrun, or install "
                               "a torch with distributed support")
    timeout = _dt.timedelta(seconds=TIMEOUT_S)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if _wants_cuda(device) and torch.cuda.is_available() else "gloo"
        local = _env_int("LOCAL_RANK", 0)
        try:
            if backend == "nccl":
                torch.cuda.set_device(torch.device(rank_device(device, Dist(0, _env_int("WORLD_SIZE", 1), local))))
            dist.init_process_group(backend, timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"torch.distributed ({backend}) did not start: {exc}. Start drift with "
                                   "`torchrun --nproc-per-node N -m drift ...` (it sets RANK, WORLD_SIZE, "
                                   "MASTER_ADDR and MASTER_PORT).") from exc
        started = True
    backend = str(dist.get_backend())
    group = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    here = Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=_env_int("LOCAL_RANK", 0),
                group=group, backend=backend)
    if here.is_main:
        log.info("sharded run: %d processes (%s); parts are shared out in rounds, rank 0 writes the manifest",
                 here.world_size, backend)
    try:
        yield here
    finally:
        if started:
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ parts
@dataclass(frozen=True)
class PartPlan:
    """What rank 0 planned, as every rank receives it.

    Attributes:
        root: the dataset folder.
        tables: the tables each part holds.
        metadata: the parquet key-value metadata every part file carries (rank 0's, so all ranks write the same).
        n_parts: the parts of the whole dataset.
        pending: the part indices still to make, in order (all of them, or a resume's missing and damaged ones).
        on_disk: whether the dataset folder exists already (a resume).
    """

    root: str
    tables: tuple[str, ...]
    metadata: dict[str, Any]
    n_parts: int
    pending: tuple[int, ...]
    on_disk: bool

    def share(self, dist: Dist) -> list[int]:
        """The pending parts ``dist``'s rank makes: every ``world_size``-th, from its rank."""
        return list(self.pending[dist.rank::dist.world_size])


def plan_parts(dist: Dist, make_writer: Callable[[], DatasetWriter]) -> tuple[DatasetWriter | None, PartPlan]:
    """Rank 0 opens the dataset writer (every ``--if-exists`` and resume check) and broadcasts the plan.

    Returns:
        ``(writer, plan)``: the writer on rank 0 (None elsewhere) and the plan on every rank.
    """
    writer: DatasetWriter | None = None
    plan: PartPlan | None = None
    with dist.together("planning the parts (rank 0 opens the output folder)"):
        if dist.is_main:
            writer = make_writer()
            if writer.n_parts is None:
                raise DriftError("a sharded run needs the number of parts up front (DatasetWriter n_parts)")
            done = writer.completed_parts
            plan = PartPlan(str(writer.root), writer.tables, dict(writer.metadata), int(writer.n_parts),
                            tuple(i for i in range(int(writer.n_parts)) if i not in done), writer.on_disk)
    plan = dist.broadcast(plan)
    assert plan is not None  # broadcast from rank 0, which raised above if it had none
    return writer, plan


_RESUME_HINT = "The parts every rank finished are kept: fix the problem and rerun with --if-exists resume."


def write_parts(dist: Dist, plan: PartPlan, writer: DatasetWriter | None,
                make: Callable[[int], Mapping[str, Any]]) -> None:
    """Make and write this rank's share of ``plan.pending`` in rounds (see the module docstring).

    Args:
        dist: this process's place (:data:`SINGLE` for a plain run).
        plan: the plan from :func:`plan_parts`.
        writer: rank 0's dataset writer (None on the other ranks).
        make: ``make(index)`` returns the part's tables by name (``rollouts``, ``tokens``, ...).

    Raises:
        DistributedError: another rank failed (this rank's own failure is raised as it is). Parts that were
            finished in the failed round are written and listed first.
    """
    if not dist.enabled:
        assert writer is not None
        for index in plan.pending:
            writer.write_part(index, **make(index))
        return
    files = writer.files if writer is not None else PartFiles(plan.root, plan.tables, plan.metadata)
    info = {"rank": dist.rank, "world_size": dist.world_size}
    on_disk = plan.on_disk
    for start in range(0, len(plan.pending), dist.world_size):
        batch = plan.pending[start: start + dist.world_size]
        index = batch[dist.rank] if dist.rank < len(batch) else None
        tables: Mapping[str, Any] | None = None
        error: Exception | None = None
        if index is not None:
            try:
                tables = make(index)
            except Exception as exc:  # reported to every rank below
                error = exc
        made = dist.all_gather(index is not None and error is None)
        if any(made) and not on_disk:  # the folder appears with the first part, as in a one-process run
            with dist.together("creating the dataset folder"):
                if writer is not None:
                    writer.materialize()
            on_disk = True
        entry: dict[str, Any] | None = None
        if tables is not None:
            try:
                entry = files.write(index, tables, info=info)  # type: ignore[arg-type]
            except Exception as exc:
                error = exc
        entries = dist.all_gather(entry)
        if writer is not None:
            try:
                writer.record_parts([e for e in entries if e is not None])
            except Exception as exc:
                error = error or exc
        dist.check(error, f"writing parts {list(batch)}", _RESUME_HINT,
                   label=f"part {index}" if index is not None else "the manifest")
