"""vLLM-scored teachers: a vLLM teacher's ``prompt_logprobs`` merged into an existing drift dataset's rollouts.

``drift import vllm PATH --rollouts DATASET --out OUT``. The teacher scored each rollout's ``teacher_prompt_ids +
response_ids`` as a prompt (offline ``SamplingParams(max_tokens=1, prompt_logprobs=K)``, or ``/v1/completions`` with
``"prompt": ids, "max_tokens": 1, "prompt_logprobs": K, "return_token_ids": true``); PATH is what came back: a
``.jsonl`` file or a folder of them (name order), one JSON object per line.

vLLM's format (read in vllm-project/vllm: ``vllm/logprobs.py``, ``vllm/v1/engine/logprobs.py``,
``vllm/v1/sample/sampler.py``, ``vllm/v1/worker/gpu_model_runner.py``, ``vllm/entrypoints/openai/completion/``):
``prompt_logprobs`` has one entry per prompt token; **entry 0 is null**; entry ``i`` scores ``ids[i]`` given
``ids[:i]`` as ``{token_id: {"logprob", "rank", "decoded_token"}}`` (JSON keys: ids as strings) holding the top-K
(ranks 1..K) **and** the realized token ``ids[i]``, added as a (K+1)-th entry when outside the top K. ``rank`` is
**1-based**: #tokens whose log-prob is >= the realized token's (early V1 releases wrote K+1 for every realized
token outside the top K: there ``teacher_rank >= K`` only says "outside"). ``K = -1`` returns the whole vocabulary
(all of it is stored: large), ``K = 0`` the realized token only. The values are ``log_softmax`` of the raw logits
(no temperature, penalty or top-p for prompt tokens); ``--logprobs-mode raw_logits|processed_logits`` gives
logits, refused here. The OpenAI server writes -inf as -9999.0 (kept; counted in the notes).

Line shapes: a dumped ``RequestOutput`` (the chat server's response has the same two fields at its top level)::

    {"prompt_token_ids": [1, 5, 9], "prompt_logprobs": [null, {"5": {"logprob": -2.1, "rank": 3,
     "decoded_token": "w1"}, "17": {"logprob": -0.4, "rank": 1, ...}, ...}, {...}],
     "prompt_id": "q1", "sample_id": 0, "step": 3, "request_id": "r7"}

or a ``/v1/completions`` response ``{"id": ..., "choices": [{"prompt_token_ids": [...], "prompt_logprobs": [...],
...}]}``, each choice one scored sequence (``prompt_token_ids`` is there only with ``return_token_ids``; a
line-level one serves a single choice). ``prompt_id`` / ``sample_id`` / ``step`` are optional and narrow the
match; ``request_id`` only names the line in messages (servers rewrite it).

Matching is by token ids: a sequence belongs to the rollouts whose ``teacher_prompt_ids + response_ids`` equal its
``prompt_token_ids`` (the teacher's prompt: a teacher-only system prompt shifts every position), and response token
``j`` takes entry ``len(teacher_prompt_ids) + j``. vLLM always puts the realized token in its entry: a list missing
it does not score these ids and stops the import (a one-token shift is named). A line matching no rollout stops the
import; rollouts no line scored are dropped and counted in the notes; a rollout scored twice keeps the first line.

Written: the dataset's ids, keys (``prompt_key`` verbatim), texts, rewards and ``student_logprob`` (with
``rollout_logprob`` / ``loss_mask`` when present); ``teacher_logprob`` = the realized token's vLLM log-prob;
``teacher_rank`` = vLLM rank - 1 (0-based; drift's own scorer counts ties for the token, vLLM against it);
``teacher_topk_ids`` / ``teacher_topk_logprobs`` = the K entries of best rank; ``teacher_argmax`` = the listed id of
largest log-prob (the rank-1 entry; ties toward the lower id; absent with K = 0). The teacher-dependent columns are
recomputed, the old teacher's and every full-vocabulary column dropped; ``support = topk``, ``k = K``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drift.errors import InputFormatError
from drift.ingest.config import ImportConfig
from drift.ingest.records import ImportedRollout

__all__ = ["Scored", "open_vllm", "parse_scored", "scored_sequences", "vllm_files"]

log = logging.getLogger(__name__)

_KEY = ("run_id", "step", "prompt_id", "sample_id")
_TOL = 1e-3  # log-probs above this (or entries whose probabilities sum above exp(_TOL)) are logits
_CARRIED = {"run_id", "step", "prompt_id", "sample_id", "prompt_key", "position", "response_len", "rel_position",
            "token_id", "student_logprob", "student_prefix_logprob", "finished", "truncated", "reward",
            "rollout_logprob", "loss_mask"}
_REPLACED = {"teacher_logprob", "advantage", "k1", "k3", "prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac",
             "teacher_prefix_logprob", "teacher_rank", "teacher_top1", "teacher_argmax", "teacher_topk_ids",
             "teacher_topk_logprobs", "teacher_id", "teacher_revision"}


@dataclass
class Scored:
    """One sequence vLLM scored: ``where`` (file, line, choice), its ``ids`` and ``entries`` (prompt_logprobs), the
    realized token's ``logprob`` and 1-based ``rank`` per entry (NaN / 0 at entry 0), the top-``k`` its entries
    hold (the shortest run of ranks 1, 2, ...), and the line's keys when given."""

    where: str
    ids: list[int]
    entries: list[Any]
    logprob: np.ndarray
    rank: np.ndarray
    k: int
    prompt_id: str | None = None
    sample_id: int | None = None
    step: int | None = None

    def topk(self, i: int, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` tokens of best rank at entry ``i`` and their log-probs."""
        items = sorted((v["rank"], int(t), float(v["logprob"])) for t, v in self.entries[i].items())[:k]
        return [t for _, t, _ in items], [lp for _, _, lp in items]


def vllm_files(path: Path) -> tuple[Path, ...]:
    """The ``.jsonl`` file at ``path``, or a folder's ``*.jsonl`` in name order."""
    if path.is_file():
        if path.suffix != ".jsonl":
            raise InputFormatError(f"{path}: expected a .jsonl file of vLLM outputs (one JSON object per line)")
        return (path,)
    if path.is_dir():
        return tuple(sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file()))
    raise InputFormatError(f"{path} does not exist (give a .jsonl file of vLLM outputs or a folder of them)")


def scored_sequences(obj: dict[str, Any], where: str) -> list[tuple[str, Any, Any]]:
    """(where, prompt_token_ids, prompt_logprobs) of each sequence a line holds (see the module docstring)."""
    if "prompt_logprobs" in obj:
        return [(where, obj.get("prompt_token_ids"), obj["prompt_logprobs"])]
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices):
        out = []
        for i, c in enumerate(choices):
            if "prompt_logprobs" not in c:
                raise InputFormatError(f"{where} choices[{i}]: no 'prompt_logprobs'; request them with "
                                       "\"prompt_logprobs\": K (and \"max_tokens\": 1)")
            ids = c.get("prompt_token_ids")
            if ids is None and len(choices) == 1:
                ids = obj.get("prompt_token_ids")
            out.append((f"{where} choices[{i}]", ids, c["prompt_logprobs"]))
        return out
    raise InputFormatError(f"{where}: no 'prompt_logprobs' (found keys {sorted(obj)[:12]}); expected vLLM's "
                           "RequestOutput fields or a /v1/completions response with choices[].prompt_logprobs")


def _shift_hint(ids: list[int], entries: list[Any]) -> str:
    n = len(ids)
    for off, what in ((-1, "entry i holds the dict of token i-1: the list runs one entry late"),
                      (1, "entry i holds the dict of token i+1: the list runs one entry early (was its leading "
                          "null dropped?)")):
        idx = [i for i in range(1, n) if 0 < i + off < n and isinstance(entries[i], dict)]
        if idx and all(str(ids[i + off]) in entries[i] for i in idx):
            return f" It is shifted by one token: {what}."
    return ""


def parse_scored(where: str, ids: Any, entries: Any, keys: dict[str, Any] | None = None) -> Scored:
    """Validate one scored sequence (every check of the module docstring) and read its realized tokens.

    Raises:
        InputFormatError: naming ``where`` and the entry.
    """
    if not isinstance(ids, list) or not all(type(x) is int and x >= 0 for x in ids):
        raise InputFormatError(f"{where}: 'prompt_token_ids' must be the list of token ids vLLM scored (send the "
                               "ids as the prompt and set \"return_token_ids\": true, or add them to the line)")
    if entries is None:
        raise InputFormatError(f"{where}: 'prompt_logprobs' is null: the request did not ask for them "
                               "(prompt_logprobs=K)")
    n = len(ids)
    if not isinstance(entries, list) or len(entries) != n:
        got = f"{len(entries)} entries" if isinstance(entries, list) else type(entries).__name__
        hint = " (entry 0, null for the first token, is missing: the list was cut or shifted)" \
            if isinstance(entries, list) and len(entries) == n - 1 else ""
        raise InputFormatError(f"{where}: 'prompt_logprobs' must hold one entry per prompt token ({n}), got "
                               f"{got}{hint}")
    if n and entries[0] is not None:
        raise InputFormatError(f"{where}: prompt_logprobs entry 0 must be null (vLLM has no log-prob for the first "
                               "token); this list is shifted or not vLLM's")
    lp, rank, k, missing = np.full(n, np.nan), np.zeros(n, np.int64), None, []
    for i in range(1, n):
        d = entries[i]
        if not isinstance(d, dict) or not d:
            raise InputFormatError(f"{where}: prompt_logprobs entry {i} is {'null' if d is None else repr(d)[:40]}; "
                                   "only entry 0 may be null, every other maps token ids to {logprob, rank}")
        try:
            vals = [(int(t), float(v["logprob"]), v["rank"]) for t, v in d.items()]
        except (KeyError, TypeError, ValueError):
            raise InputFormatError(f"{where}: prompt_logprobs entry {i} is not {{token_id: {{\"logprob\": x, "
                                   f"\"rank\": r, \"decoded_token\": s}}}}: {repr(d)[:80]}") from None
        ranks = [r for _, _, r in vals]
        bad = [r for r in ranks if type(r) is not int or r < 1]
        if bad:
            raise InputFormatError(f"{where}: prompt_logprobs entry {i} has rank {bad[0]!r}; vLLM's ranks are "
                                   "1-based integers (were they converted already?)")
        ranks.sort()
        top = max(v for _, v, _ in vals)
        if top > _TOL or top + math.log(sum(math.exp(v - top) for _, v, _ in vals)) > _TOL:
            raise InputFormatError(f"{where}: prompt_logprobs entry {i} holds logits, not log-probs (max {top:.3g}, "
                                   "or probabilities summing above 1): the server ran with --logprobs-mode "
                                   "raw_logits/processed_logits; score with the default raw_logprobs")
        run = 0
        while run < len(ranks) and ranks[run] == run + 1:
            run += 1
        k = run if k is None else min(k, run)
        v = d.get(str(ids[i]))
        if v is None:
            missing.append(i)
            continue
        lp[i], rank[i] = float(v["logprob"]), int(v["rank"])
    if missing:
        i = missing[0]
        raise InputFormatError(
            f"{where}: the scored token is missing from {len(missing)} of {n - 1} prompt_logprobs entries (first "
            f"entry {i}, token {ids[i]}). vLLM always includes it, so this list does not score these "
            f"prompt_token_ids.{_shift_hint(ids, entries)}")
    keys = keys or {}
    return Scored(where, ids, entries, lp, rank, k or 0, keys.get("prompt_id"), keys.get("sample_id"),
                  keys.get("step"))


def _line_keys(obj: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pid = obj.get("prompt_id")
    if pid is not None:
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise InputFormatError(f"{where} 'prompt_id': must be a string, got {pid!r}")
        out["prompt_id"] = str(pid)
    for key in ("sample_id", "step"):
        v = obj.get(key)
        if v is not None:
            if type(v) is not int or v < 0:
                raise InputFormatError(f"{where} {key!r}: must be a non-negative integer, got {v!r}")
            out[key] = v
    return out


def iter_scored(path: Path) -> Iterator[Scored]:
    """Every scored sequence of one file, streamed line by line."""
    from drift.collect.prompts import iter_jsonl

    problems: list[str] = []
    for lineno, obj in iter_jsonl(path, problems):
        if problems:
            break
        where = f"{path} line {lineno}" + (f" (request_id {obj['request_id']})" if obj.get("request_id") else "")
        keys = _line_keys(obj, where)
        for w, ids, entries in scored_sequences(obj, where):
            yield parse_scored(w, ids, entries, keys)
    if problems:
        raise InputFormatError(f"{path}: " + "; ".join(problems[:5]))


def _digest(ids: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(), digest_size=16).digest()


class _Lists:
    """A list<int> column as flat values and offsets (row ``i`` -> an int64 array)."""

    def __init__(self, col: pa.ChunkedArray) -> None:
        arr = col.combine_chunks()
        self.values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(pc.list_value_length(arr).to_numpy(zero_copy_only=False))])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]


class _Dataset:
    """The rollouts of ``--rollouts``, indexed by ``teacher_prompt_ids + response_ids``, with their student
    per-token columns."""

    def __init__(self, path: str) -> None:
        from drift.store import open_dataset

        ds = open_dataset(path)
        self.meta = ds.metadata
        self.table = ds.read("rollouts").combine_chunks()
        n = self.table.num_rows
        self.student_ids, self.teacher_ids = _Lists(self.table["student_prompt_ids"]), \
            _Lists(self.table["teacher_prompt_ids"])
        self.response_ids = _Lists(self.table["response_ids"])
        self.by_ids: dict[bytes, list[int]] = {}
        self.by_student: dict[bytes, int] = {}  # only where the teacher's prompt differs, for messages
        keys = list(zip(*(self.table[c].to_pylist() for c in _KEY), strict=True))
        self.keys = keys
        for r in range(n):
            self.by_ids.setdefault(_digest(np.concatenate([self.teacher_ids[r], self.response_ids[r]])), []).append(r)
            if not np.array_equal(self.teacher_ids[r], self.student_ids[r]):
                self.by_student[_digest(np.concatenate([self.student_ids[r], self.response_ids[r]]))] = r
        names = set(ds.dataset("tokens").schema.names)
        extra = [c for c in ("rollout_logprob", "loss_mask") if c in names]
        self.dropped = sorted(names - _CARRIED - _REPLACED)
        self.replaced = sorted(names & _REPLACED)
        tok = ds.read("tokens", columns=[*_KEY, "position", "student_logprob", *extra])
        tok = tok.sort_by([(c, "ascending") for c in (*_KEY, "position")]).combine_chunks()
        self.span = self._spans(tok, keys, path)
        self.student = tok["student_logprob"].to_numpy(zero_copy_only=False).astype(np.float64)
        self.rollout_lp = None
        if "rollout_logprob" in extra and tok["rollout_logprob"].null_count == 0:
            self.rollout_lp = tok["rollout_logprob"].to_numpy(zero_copy_only=False).astype(np.float64)
        elif "rollout_logprob" in extra:
            self.dropped.append("rollout_logprob (null for some rollouts)")
        self.loss_mask = tok["loss_mask"].to_numpy(zero_copy_only=False) if "loss_mask" in extra else None

    def _spans(self, tok: pa.Table, keys: list[tuple[Any, ...]], path: str) -> np.ndarray:
        n = tok.num_rows
        cols = []
        for c in _KEY:
            a = tok[c].combine_chunks()
            cols.append(a.to_numpy() if pa.types.is_integer(a.type) else pc.dictionary_encode(a).indices.to_numpy())
        change = np.ones(n, bool)
        if n:
            change[1:] = np.any([x[1:] != x[:-1] for x in cols], axis=0)
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], n)
        pos = tok["position"].to_numpy()
        if n and not (pos == np.arange(n) - np.repeat(starts, ends - starts)).all():
            raise InputFormatError(f"{path}: the tokens table's positions are not 0, 1, ... per rollout")
        heads = tok.select(list(_KEY)).take(pa.array(starts)).to_pylist()
        where = {tuple(h[c] for c in _KEY): (s, e) for h, s, e in zip(heads, starts, ends, strict=True)}
        if len(set(keys)) != len(keys):
            raise InputFormatError(f"{path}: rollouts repeat a key {_KEY}; the dataset is not one drift dataset")
        span = np.zeros((len(keys), 2), np.int64)
        for r, key in enumerate(keys):
            s, e = where.get(key, (0, 0))
            if e - s != len(self.response_ids[r]):
                raise InputFormatError(f"{path}: rollout {dict(zip(_KEY, key, strict=True))} has {e - s} token rows "
                                       f"for {len(self.response_ids[r])} response tokens")
            span[r] = s, e
        return span

    def match(self, sc: Scored) -> list[int]:
        """The rollouts ``sc`` scored (ids equal, keys agree); raises naming the line when there are none."""
        ids = np.asarray(sc.ids, np.int64)
        rows = [r for r in self.by_ids.get(_digest(ids), [])
                if np.array_equal(np.concatenate([self.teacher_ids[r], self.response_ids[r]]), ids)]
        want = {"prompt_id": sc.prompt_id, "sample_id": sc.sample_id, "step": sc.step}
        idx = {"step": 1, "prompt_id": 2, "sample_id": 3}
        rows = [r for r in rows if all(v is None or self.keys[r][idx[k]] == v for k, v in want.items())]
        for r in rows:
            if len(self.teacher_ids[r]) == 0:
                raise InputFormatError(f"{sc.where}: rollout {self._name(r)} has an empty teacher prompt; vLLM has "
                                       "no log-prob for its first response token")
        if rows:
            return rows
        hint = ""
        if _digest(ids) in self.by_ids:
            hint = f" Its ids match rollouts whose keys differ from the line's {want}."
        elif _digest(ids) in self.by_student:
            r = self.by_student[_digest(ids)]
            hint = (f" It equals rollout {self._name(r)}'s student_prompt_ids + response_ids, but that rollout's "
                    f"teacher saw another prompt ({len(self.teacher_ids[r])} tokens, a teacher-only system prompt?):"
                    " score teacher_prompt_ids + response_ids.")
        elif len(ids) > 1 and _digest(ids[1:]) in self.by_ids:
            hint = " Without its first token it matches: the scored ids carry an extra leading token (a second BOS?)."
        elif sc.prompt_id is not None:
            same = [r for r, key in enumerate(self.keys) if key[2] == sc.prompt_id
                    and (sc.sample_id is None or key[3] == sc.sample_id) and (sc.step is None or key[1] == sc.step)]
            if same:
                want_ids = np.concatenate([self.teacher_ids[same[0]], self.response_ids[same[0]]])
                m = min(len(want_ids), len(ids))
                diff = int(np.flatnonzero(want_ids[:m] != ids[:m])[0]) if (want_ids[:m] != ids[:m]).any() else m
                hint = (f" Rollout {self._name(same[0])} has these keys, but its {len(want_ids)} ids differ from the "
                        f"line's {len(ids)} from position {diff} on.")
        raise InputFormatError(f"{sc.where}: the {len(ids)} scored token ids match no rollout of the --rollouts "
                               f"dataset (teacher_prompt_ids + response_ids).{hint}")

    def _name(self, r: int) -> str:
        return "/".join(str(x) for x in self.keys[r])

    def rollout(self, r: int, sc: Scored, k: int, cfg: ImportConfig) -> ImportedRollout:
        """Rollout ``r`` with the teacher columns of ``sc``."""
        row = self.table.slice(r, 1).to_pylist()[0]
        p, n = len(self.teacher_ids[r]), len(self.response_ids[r])
        idx = np.arange(p, p + n)
        s, e = self.span[r]
        tops = [sc.topk(int(i), k) for i in idx]
        return ImportedRollout(
            prompt_ids=row["student_prompt_ids"], response_ids=row["response_ids"],
            teacher_prompt_ids=row["teacher_prompt_ids"], student_logprob=self.student[s:e],
            teacher_logprob=sc.logprob[idx], rollout_logprob=None if self.rollout_lp is None else self.rollout_lp[s:e],
            step=int(row["step"]), prompt_id=str(row["prompt_id"]), sample_id=int(row["sample_id"]),
            prompt_key=row.get("prompt_key"), loss_mask=None if self.loss_mask is None else self.loss_mask[s:e],
            reward=row["reward"], finished=row["finished"], truncated=row["truncated"], prompt_text=row["prompt"],
            response_text=row["response_text"], teacher_prompt_text=row.get("teacher_prompt"),
            answer=row.get("answer"),
            teacher_id=cfg.teacher_id, teacher_revision=cfg.teacher_revision, teacher_rank=sc.rank[idx] - 1,
            teacher_topk_ids=[t[0] for t in tops], teacher_topk_logprobs=[t[1] for t in tops], source=sc.where)


class _Merge:
    """Streams the vLLM files into rollouts; each rollout is taken from the first line (in file order) that scored
    it, also after a resume skipped the files before (they are re-read for their matches, not re-imported)."""

    def __init__(self, data: _Dataset, files: tuple[Path, ...], k: int, cfg: ImportConfig,
                 notes: dict[str, Any]) -> None:
        self.data, self.files, self.k, self.cfg, self.notes = data, files, k, cfg, notes
        self.owner = np.full(len(data.keys), -1, np.int64)
        self.read = -1  # files[: read + 1] have been matched in this process
        self.duplicates = self.clamped = 0

    def _scan(self, f: int, emit: bool) -> Iterator[ImportedRollout]:
        for sc in iter_scored(self.files[f]):
            if sc.k < self.k:
                raise InputFormatError(f"{sc.where}: scored with prompt_logprobs={sc.k}, but earlier lines hold the "
                                       f"top {self.k}; import lines of one K together")
            rows = [r for r in self.data.match(sc) if self.owner[r] < 0]
            if not rows:
                self.duplicates += 1
            for r in rows:
                self.owner[r] = f
                if emit:
                    out = self.data.rollout(r, sc, self.k, self.cfg)
                    self.clamped += int((out.teacher_logprob <= -9999.0).sum())
                    yield out

    def iter_file(self, path: Path) -> Iterator[ImportedRollout]:
        """The rollouts of one file (see the class docstring)."""
        f = self.files.index(path)
        for j in range(self.read + 1, f):
            for _ in self._scan(j, emit=False):
                pass
        self.owner[self.owner >= f] = -1
        yield from self._scan(f, emit=True)
        self.read = f
        if f == len(self.files) - 1:
            scored = int((self.owner >= 0).sum())
            self.notes.update(rollouts_in_dataset=len(self.owner), rollouts_scored=scored,
                              rollouts_dropped_unscored=len(self.owner) - scored, duplicate_lines=self.duplicates,
                              clamped_teacher_logprobs=self.clamped)
            if scored < len(self.owner):
                log.warning("%d of %d rollouts of %s have no vLLM line and are dropped", len(self.owner) - scored,
                            len(self.owner), self.cfg.rollouts)


def _peek_k(files: tuple[Path, ...], n: int = 8) -> int | None:
    ks: list[int] = []
    for path in files:
        for sc in iter_scored(path):
            ks.append(sc.k)
            if len(ks) >= n:
                return min(ks)
    return min(ks) if ks else None


def open_vllm(cfg: ImportConfig) -> Any:
    """The :class:`~drift.ingest.run.SourcePlan` of a vLLM ``prompt_logprobs`` merge (see the module docstring).

    Raises:
        InputFormatError: the files or the dataset are malformed, or their temperatures disagree.
    """
    from drift.ingest.run import SourcePlan, resolve_tokenizer

    if cfg.temperature is not None and cfg.temperature != 1.0:
        raise InputFormatError(f"--temperature {cfg.temperature}: vLLM's prompt_logprobs are always at temperature "
                               "1 (log_softmax of the raw logits); drop the flag")
    data = _Dataset(str(cfg.rollouts))
    temp = data.meta.get("score_temperature")
    if temp is not None and float(temp) != 1.0:
        raise InputFormatError(f"{cfg.rollouts}: its student log-probs are at score_temperature {temp}, vLLM's "
                               "prompt_logprobs at 1; re-score the rollouts with `drift score --score-temperature 1` "
                               "first")
    root = Path(cfg.path)
    files = vllm_files(root)
    k = _peek_k(files)
    tokenizer, tokenizer_source = resolve_tokenizer(cfg)
    notes: dict[str, Any] = {
        "layout": "vLLM prompt_logprobs (RequestOutput fields or /v1/completions choices) merged by token ids",
        "rollouts_dataset": str(cfg.rollouts), "dataset_support": data.meta.get("support"),
        "dataset_tokenizer": data.meta.get("tokenizer"), "temperature": 1.0, "k": k,
        "rank": "teacher_rank = vLLM rank - 1 (vLLM counts ties against the token)",
        "replaced_columns": data.replaced,
        "dropped_columns": data.dropped,
    }
    merge = _Merge(data, files, k or 0, cfg, notes)
    return SourcePlan(format="vllm", root=root, files=files, iter_file=merge.iter_file, support="topk",
                      has_teacher=True, teacher_source="vllm_prompt_logprobs", tokenizer=tokenizer,
                      tokenizer_source=tokenizer_source, notes=notes, k=k)
