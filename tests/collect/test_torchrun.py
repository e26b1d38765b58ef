"""Sharded collect / score / probe under torchrun equal one process, row for row; resume and errors across ranks.

The fast tests drive :func:`drift.runtime.distributed.write_parts` with ranks that are threads (a fake channel);
the slow ones start ``torchrun --nproc-per-node 2 -m drift ...`` (gloo, CPU) on the toy world and compare with a
one-process run with one thread (torchrun gives each rank one thread; thread counts can change float sums).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from drift.errors import DatasetExistsError
from drift.runtime import distributed
from drift.runtime.distributed import SINGLE, Dist, DistributedError, plan_parts, session, write_parts
from drift.schema import ROLLOUT_KEY
from drift.store import DatasetWriter, open_dataset

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"tokens": [*ROLLOUT_KEY, "position"], "rollouts": list(ROLLOUT_KEY),
        "continuations": [*ROLLOUT_KEY, "ratio", "model", "continuation"]}
SMALL = ["--preset", "toy", "--max-prompts", "10", "--samples-per-prompt", "2", "--part-size", "4", "--run-id", "toy",
         "--progress", "false"]  # 5 parts of 2 prompts x 2 samples: an odd count, so one rank idles in a round


# ------------------------------------------------------------------------------------------- ranks as threads
class _Hub:
    """An all-gather between threads: each rank drops its value in a slot, all read every slot."""

    def __init__(self, world: int) -> None:
        self.slots: list[Any] = [None] * world
        self.barrier = threading.Barrier(world, timeout=30)

    def exchange(self, rank: int, value: Any) -> list[Any]:
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


@dataclass(frozen=True)
class _ThreadDist(Dist):
    hub: Any = None

    def all_gather(self, value: Any) -> list[Any]:
        return self.hub.exchange(self.rank, value)

    def broadcast(self, value: Any) -> Any:
        return self.hub.exchange(self.rank, value)[0]

    def barrier(self) -> None:
        self.hub.exchange(self.rank, None)


def _table(index: int) -> pa.Table:
    return pa.table({"part": pa.array([index] * 3, pa.int64()), "x": pa.array([index + j / 4 for j in range(3)])})


def _writer(root: Path, if_exists: str = "fail") -> Callable[[], DatasetWriter]:
    return lambda: DatasetWriter(root, if_exists=if_exists, config={"config": {}}, n_parts=5,  # type: ignore
                                 tables=("cont",), identity={"k": 1})


def _run_ranks(world: int, root: Path, make: Callable[[int, int], pa.Table], if_exists: str = "fail") -> list[Any]:
    """Plan and write with ``world`` thread ranks; each rank's result is None or the exception it raised."""
    hub = _Hub(world)
    results: list[Any] = [None] * world

    def rank(r: int) -> None:
        d = _ThreadDist(rank=r, world_size=world, hub=hub)
        writer = None
        try:
            writer, plan = plan_parts(d, _writer(root, if_exists))
            write_parts(d, plan, writer, lambda i: {"cont": make(r, i)})
            if writer is not None:
                writer.close("complete")
        except Exception as exc:
            if writer is not None:
                writer.close("interrupted")
            results[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results


def _parts(root: Path) -> list[tuple[int, int]]:
    return [(p["index"], p["rank"]) for p in open_dataset(root).manifest["parts"]]


def test_ranks_share_the_parts_and_rank_0_lists_them(tmp_path):
    root = tmp_path / "d"
    assert _run_ranks(2, root, lambda r, i: _table(i)) == [None, None]
    ds = open_dataset(root)
    assert ds.manifest["status"] == "complete" and ds.manifest["n_cont"] == 15
    assert _parts(root) == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]  # round robin; the last round has one part
    assert ds.read("cont").sort_by("x").equals(pa.concat_tables([_table(i) for i in range(5)]))
    assert sorted(p.name for p in (root / "cont").iterdir()) == [f"part-{i:05d}.parquet" for i in range(5)]


def test_a_failing_rank_stops_every_rank_and_resume_finishes(tmp_path):
    root = tmp_path / "d"

    def make(r: int, i: int) -> pa.Table:
        if i == 3:
            raise RuntimeError("boom on purpose")
        return _table(i)

    ranks = _run_ranks(2, root, make)
    assert isinstance(ranks[1], RuntimeError) and "boom" in str(ranks[1])  # the failed rank: its own error
    assert isinstance(ranks[0], DistributedError)  # the others: who failed, where, why, and what to do
    assert "rank 1: part 3: RuntimeError: boom on purpose" in str(ranks[0]) and "--if-exists resume" in str(ranks[0])
    half = open_dataset(root)
    assert half.manifest["status"] == "interrupted" and [i for i, _ in _parts(root)] == [0, 1, 2]  # part 2 kept
    assert _run_ranks(2, root, lambda r, i: _table(i), if_exists="resume") == [None, None]
    assert _parts(root) == [(0, 0), (1, 1), (2, 0), (3, 0), (4, 1)]  # the pending parts are shared out afresh
    assert open_dataset(root).read("cont").sort_by("x").equals(pa.concat_tables([_table(i) for i in range(5)]))


def test_overwrite_and_resume_of_a_complete_dataset(tmp_path):
    root = tmp_path / "d"
    assert _run_ranks(2, root, lambda r, i: _table(i)) == [None, None]
    assert _run_ranks(2, root, lambda r, i: _table(i + 10), if_exists="overwrite") == [None, None]
    assert sorted(open_dataset(root).to_pandas("cont")["part"].unique()) == list(range(10, 15))
    assert _run_ranks(3, root, lambda r, i: _table(-1), if_exists="resume") == [None] * 3  # nothing pending
    ds = open_dataset(root)
    assert ds.manifest["status"] == "complete" and ds.manifest["resumed"] == 1 and ds.manifest["n_cont"] == 15


def test_a_first_round_that_fails_everywhere_leaves_no_folder(tmp_path):
    root = tmp_path / "d"

    def make(r: int, i: int) -> pa.Table:
        raise ValueError(f"rank {r} cannot")

    ranks = _run_ranks(2, root, make)
    assert all(isinstance(e, ValueError) for e in ranks)
    assert not root.exists()  # as in a one-process run: nothing reaches the disk before a part


def test_a_planning_error_on_rank_0_reaches_every_rank(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "other.txt").write_text("not a dataset")
    ranks = _run_ranks(2, root, lambda r, i: _table(i))
    assert isinstance(ranks[0], DatasetExistsError)
    assert isinstance(ranks[1], DistributedError) and "rank 0: DatasetExistsError" in str(ranks[1])


def test_a_plain_run_is_rank_0_of_1(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with session("cpu") as d:
        assert d is SINGLE and d.is_main and not d.enabled
    assert distributed.is_main() and not distributed.launched()
    assert distributed.rank_device("auto", SINGLE) == "auto"
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()


# ------------------------------------------------------------------------------------------- real torchrun
def _launch(args: list[str], *, nproc: int = 2, module: str = "drift", timeout: float = 600) -> tuple[
        subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", module, *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - t0


def _single(args: list[str]) -> float:
    """The one-process reference, in this process (the same CLI code path), with one thread."""
    from drift.cli import main

    t0 = time.perf_counter()
    assert main([*args, "--num-threads", "1"]) == 0
    return time.perf_counter() - t0


def _assert_same_rows(a: Path, b: Path, tables: tuple[str, ...]) -> None:
    for table in tables:
        x = open_dataset(a).to_pandas(table)
        y = open_dataset(b).to_pandas(table)
        assert list(x.columns) == list(y.columns) and len(x) == len(y) > 0
        x = x.sort_values(KEYS[table]).reset_index(drop=True)
        y = y.sort_values(KEYS[table]).reset_index(drop=True)
        assert not x.duplicated(subset=KEYS[table]).any()
        pd.testing.assert_frame_equal(x, y, check_exact=True)


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "toy"
    wall = _single(["collect", *SMALL, "--out", str(out)])
    print(f"[one process, one thread: collect {wall:.1f} s]")
    assert len(open_dataset(out).manifest["parts"]) == 5
    return out


@pytest.mark.slow
def test_two_processes_collect_the_one_process_dataset(reference, tmp_path):
    out = tmp_path / "toy"
    done, wall = _launch(["collect", *SMALL, "--out", str(out)])
    print(f"[torchrun, 2 processes: collect {wall:.1f} s]")
    _ok(done)
    _assert_same_rows(reference, out, ("tokens", "rollouts"))
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete" and ds.manifest["n_parts_planned"] == 5
    assert [(p["index"], p["rank"], p["world_size"]) for p in ds.manifest["parts"]] == [
        (i, i % 2, 2) for i in range(5)]
    assert ds.verify() == [] and not [f for t in ("tokens", "rollouts") for f in (out / t).iterdir()
                                      if f.name.startswith(".")]
    assert ds.config["config"] == open_dataset(reference).config["config"] | {"out": str(out)}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_broken_rank_then_a_two_process_resume_equals_one_process(reference, tmp_path, how):
    out = tmp_path / "toy"
    done, wall = _launch([how, "collect", *SMALL, "--out", str(out)], module="tests.collect.test_torchrun")
    print(f"[torchrun, 2 processes, rank 1 {how}s at its second part: {wall:.1f} s]")
    assert done.returncode != 0
    parts = [p["index"] for p in open_dataset(out).manifest["parts"]]
    if how == "raise":  # rank 0 finished part 2 in the failed round; it is kept, and rank 0 says why it stopped
        assert "rank 1: part 3: RuntimeError: rank 1 broke on purpose" in done.stderr, done.stderr[-4000:]
        assert "DistributedError" in done.stderr and parts == [0, 1, 2]
        assert open_dataset(out).manifest["status"] == "interrupted"
    else:
        assert parts[:2] == [0, 1] and 3 not in parts
    tokens = out / "tokens" / "part-00000.parquet"
    tokens.write_bytes(tokens.read_bytes()[:100])  # and a damaged part, which rank 0's plan drops
    done, wall = _launch(["collect", *SMALL, "--out", str(out), "--if-exists", "resume"])
    print(f"[torchrun, 2 processes: resume {wall:.1f} s]")
    _ok(done)
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete" and ds.manifest["resumed"] == 1
    _assert_same_rows(reference, out, ("tokens", "rollouts"))


@pytest.mark.slow
def test_two_processes_score_and_probe_like_one(reference, tmp_path):
    from drift.presets import preset_values

    toy = preset_values("toy")
    score = ["score", "--rollouts", str(reference), "--student", toy["student"], "--teacher", toy["teacher"],
             "--world", toy["world"], "--part-size", "3", "--step", "7", "--progress", "false"]
    probe = ["probe", str(reference), "--ratios", "0,0.5,1", "--continuations", "2", "--part-size", "3",
             "--n-boot", "50", "--progress", "false"]
    one, two = tmp_path / "one", tmp_path / "two"
    walls = {"score 1": _single([*score, "--out", str(one / "score")]),
             "probe 1": _single([*probe, "--out", str(one / "probe")])}
    for name, args in (("score", score), ("probe", probe)):
        done, walls[f"{name} 2"] = _launch([*args, "--out", str(two / name)])
        _ok(done)
    print("[" + ", ".join(f"{k} process(es): {v:.1f} s" for k, v in walls.items()) + "]")
    _assert_same_rows(one / "score", two / "score", ("tokens", "rollouts"))
    _assert_same_rows(one / "probe", two / "probe", ("continuations",))
    assert len(open_dataset(two / "probe").manifest["parts"]) == 7  # 20 rollouts in parts of 3
    pd.testing.assert_frame_equal(pd.read_parquet(one / "probe" / "accuracy.parquet"),
                                  pd.read_parquet(two / "probe" / "accuracy.parquet"), check_exact=True)
    assert json.loads((one / "probe" / "auroc.json").read_text()) == json.loads(
        (two / "probe" / "auroc.json").read_text())


def _broken_worker(argv: list[str]) -> int:
    """One rank of the broken-rank test: rank 1 raises (or is killed) when it samples its second part."""
    how, *args = argv
    if os.environ.get("RANK") == "1":
        import drift.collect.pipeline as pipeline

        real = pipeline.sample_responses
        calls = {"n": 0}

        def broken(*a: Any, **k: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("rank 1 broke on purpose")
            return real(*a, **k)

        pipeline.sample_responses = broken  # type: ignore[assignment]
    from drift.cli import main

    return main(args)


if __name__ == "__main__":
    sys.exit(_broken_worker(sys.argv[1:]))
