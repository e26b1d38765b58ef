"""slime's ``--dump-details DIR`` (``drift import slime DIR --out OUT``).

Read from THUDM/slime at 624b824 (``slime/observability/train_data_utils.py``, ``rollout_data_utils.py``,
``slime/utils/arguments.py``, ``slime/ray/rollout.py``, ``slime/utils/types.py``). ``--dump-details DIR`` writes:

- ``DIR/train_data/{rollout_id}.pt`` (``_build_dump_payload``): ``{format_version: 2, rollout_id, rank, samples,
  dp_shards, raw_reward?}``. ``samples`` holds one dict per training sample, sorted by ``rollout_position`` (its
  index in the rollout dump): ``tokens`` (int64, prompt + response), ``response_lengths`` (R), ``total_lengths``
  (= len(tokens)), ``sample_index`` (``Sample.index``, may be None), ``data_parallel_rank``, ``rollout_ids``
  (*batch-local*: not the step), ``rewards`` (post-processed), ``local_raw_reward``, ``truncated`` (0/1), and
  response-long (R) tensors ``log_probs`` (trainer-side student), ``rollout_log_probs`` (the SGLang sampler),
  ``teacher_log_probs`` (OPD), ``ref_log_probs``, ``advantages``, ``returns``, ``kl`` (vs the *reference* model),
  ``opd_reverse_kl`` (= student - teacher), ``entropy``, ``values`` and ``loss_masks`` (int). ``raw_reward`` is
  the whole batch's list, indexed by ``rollout_position``.
- ``DIR/rollout_data/{rollout_id}.pt``: ``{rollout_id, samples: [Sample.to_dict()]}`` in rollout order, with
  ``tokens``, ``response_length``, ``prompt``, ``response``, ``reward``, ``status`` ("completed", "truncated",
  "aborted", ...), ``group_index``, ``index``; ``rollout_data/eval_{id}.pt`` (evaluation) has no train file.
- ``DIR/tokenizer/``: the run's tokenizer.

Releases from 2025-07 (ed2f3a9) until 681b3ad (2026-08) wrote ``train_data/{rollout_id}_{rank}.pt`` from *every*
rank instead: ``{rollout_id, rank, rollout_data}`` with ``rollout_data`` the rank's DP-local columns (a dict of
per-sample lists: ``tokens``, ``response_lengths``, ``total_lengths``, ``sample_indices``, ``log_probs`` ...).
Tensor-parallel ranks hold copies, non-last pipeline stages hold no ``log_probs``, and with context parallelism each
rank holds only its chunk of the response. drift reads that layout by keeping each sample once (from the lowest rank
that holds its full-length student log-probs, keyed by ``sample_index``); CP-chunked files are refused.

Import: ``step`` = the file's ``rollout_id``; prompt ids = ``tokens[:total - R]``, response ids = the last R tokens;
``student_logprob`` = ``log_probs`` (``rollout_log_probs`` when the run kept no trainer-side log-probs, noted),
``teacher_logprob`` = ``teacher_log_probs`` (absent without OPD: has_teacher False), ``rollout_logprob`` =
``rollout_log_probs``. The rollout dump, joined by ``rollout_position`` (``index`` in the older layout) and checked
token by token, gives the prompt / response text and ``status``. The prompt key is a hash of the prompt ids:
slime's ``group_index`` counts prompt *draws*, so a prompt re-drawn in a later epoch gets a new one. slime's
``advantages`` are not imported (drift recomputes teacher - student); its sign conventions are checked on the first
file and recorded. Samples with an empty response hold no tokens and are skipped.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drift.errors import InputFormatError
from drift.ingest.config import ImportConfig
from drift.ingest.records import ImportedRollout
from drift.ingest.torchload import load_pt

__all__ = ["open_slime", "slime_files"]

_V2_NAME = re.compile(r"^(\d+)\.pt$")
_V1_NAME = re.compile(r"^(\d+)_(\d+)\.pt$")
#: response-long fields whose length is checked against response_lengths
_RESPONSE_LONG = ("log_probs", "rollout_log_probs", "teacher_log_probs", "ref_log_probs", "advantages", "returns",
                  "kl", "opd_reverse_kl", "entropy", "values", "loss_masks")
#: per-rank fields of the older layout that are not per-sample
_V1_NOT_PER_SAMPLE = ("raw_reward", "partition", "micro_batch_indices", "num_microbatches", "global_batch_sizes")
_TOL = 1e-4
_ASIDE = "move DIR/rollout_data aside to import without it (it only adds text and status)"


@dataclass(frozen=True)
class _Spec:
    student: str  # the key read as student_logprob
    teacher: bool
    rollout: bool


@dataclass
class _Dump:
    """A rollout dump: its samples, and where each ``Sample.index`` sits (the older layout joins on it)."""

    path: Path
    entries: list[Any]
    by_index: dict[Any, int]


@dataclass
class _Loaded:
    layout: str  # "v2" or "v1"
    rollout_id: int
    samples: list[dict[str, Any]]
    raw_reward: list[Any] | None


def _dirs(root: Path) -> tuple[Path, Path]:
    """(train_data folder, dump root) of DIR, DIR/train_data or one train file."""
    if root.is_file():
        return root.parent, root.parent.parent
    if (root / "train_data").is_dir():
        return root / "train_data", root
    return root, root.parent


def _file_key(p: Path) -> tuple[int, int]:
    m = _V2_NAME.match(p.name) or _V1_NAME.match(p.name)
    return (0, -1) if m is None else (int(m.group(1)), int(m.group(2)) if m.re is _V1_NAME else -1)


def slime_files(root: Path) -> tuple[tuple[Path, ...], list[str]]:
    """The train dumps under ``root`` in (rollout_id, rank) order (numeric), and the .pt names ignored. One file
    given directly is read whatever its name (``--save-debug-train-data`` takes any template)."""
    if root.is_file():
        return (root,), []
    train, _ = _dirs(root)
    cand = sorted(train.glob("*.pt")) if train.is_dir() else []
    files = [p for p in cand if _V2_NAME.match(p.name) or _V1_NAME.match(p.name)]
    ignored = [p.name for p in cand if p not in files]
    return tuple(sorted(files, key=_file_key)), ignored


def _bad(path: Path, msg: str) -> InputFormatError:
    return InputFormatError(f"{path}: {msg}")


def _array(value: Any, where: str, key: str, kind: str) -> np.ndarray:
    """A 1-D array of a tensor or list; ``kind`` int (ids), float (log-probs) or mask."""
    import torch

    if torch.is_tensor(value):
        t = value.detach().cpu()
        a = (t.double() if t.is_floating_point() else t).numpy()
    elif isinstance(value, (list, tuple)):
        a = np.asarray(value)
    else:
        raise InputFormatError(f"{where} {key!r}: expected a tensor or list, got {type(value).__name__}")
    if a.ndim != 1:
        raise InputFormatError(f"{where} {key!r}: expected a 1-D tensor, got shape {tuple(a.shape)}")
    ok = {"int": np.issubdtype(a.dtype, np.integer), "float": np.issubdtype(a.dtype, np.number),
          "mask": np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_}[kind]
    if a.size and not ok:
        raise InputFormatError(f"{where} {key!r}: expected {kind} values, got dtype {a.dtype}")
    return a.astype(np.float64) if kind == "float" else a


def _int(value: Any, where: str, key: str) -> int:
    import torch

    if torch.is_tensor(value) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise InputFormatError(f"{where} {key!r}: expected an integer, got {value!r:.80}")


def _number(value: Any) -> float | None:
    import torch

    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    return None


def _per_sample(value: Any, n: int) -> bool:
    """slime's ``_is_per_sample``: a list / tuple of n entries, or a tensor whose first dimension is n."""
    import torch

    if torch.is_tensor(value):
        return value.dim() >= 1 and value.size(0) == n
    return isinstance(value, (list, tuple)) and len(value) == n


def _load(path: Path, cfg: ImportConfig) -> _Loaded:
    """One train dump, both layouts reduced to a list of per-sample dicts."""
    data = load_pt(path, allow_pickle=cfg.allow_pickle)
    if not isinstance(data, dict):
        raise _bad(path, f"expected the dict torch.save'd by slime's --dump-details, got {type(data).__name__}")
    if "rollout_id" not in data:
        raise _bad(path, f"missing key 'rollout_id' (found keys {sorted(map(str, data))})")
    rid = _int(data["rollout_id"], str(path), "rollout_id")
    if "samples" in data:
        if data.get("format_version") != 2:
            raise _bad(path, f"format_version {data.get('format_version')!r}: drift reads slime's train dump "
                             "format_version 2 (train_data/{rollout_id}.pt) and the older per-rank layout "
                             "(train_data/{rollout_id}_{rank}.pt with a rollout_data dict)")
        samples = data["samples"]
        if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
            raise _bad(path, "'samples' must be a list of dicts (one per training sample)")
        raw = data.get("raw_reward")
        return _Loaded("v2", rid, samples, list(raw) if isinstance(raw, (list, tuple)) else None)
    cols = data.get("rollout_data")
    if not isinstance(cols, dict):
        raise _bad(path, "neither 'samples' (format_version 2, train_data/{rollout_id}.pt) nor 'rollout_data' "
                         f"(the older per-rank train_data/{{rollout_id}}_{{rank}}.pt); found keys "
                         f"{sorted(map(str, data))}. drift reads those two slime train-dump layouts")
    if "response_lengths" not in cols:
        raise _bad(path, f"rollout_data: missing key 'response_lengths' (found keys {sorted(map(str, cols))})")
    n = len(cols["response_lengths"])
    per = {k: v for k, v in cols.items() if k not in _V1_NOT_PER_SAMPLE and _per_sample(v, n)}
    samples = [{("sample_index" if k == "sample_indices" else k): v[i] for k, v in per.items()} for i in range(n)]
    return _Loaded("v1", rid, samples, None)


def _rollout_dump(dump_root: Path, rid: int, cfg: ImportConfig) -> _Dump | None:
    path = dump_root / "rollout_data" / f"{rid}.pt"
    if not path.is_file():
        return None
    try:
        data = load_pt(path, allow_pickle=cfg.allow_pickle)
    except InputFormatError as exc:
        raise InputFormatError(f"{exc} (This is the rollout dump of {rid}; {_ASIDE}.)") from None
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
        raise _bad(path, f"expected slime's rollout dump {{rollout_id, samples: [Sample.to_dict()]}}; {_ASIDE}")
    entries = data["samples"]
    return _Dump(path, entries, {e.get("index"): j for j, e in reversed(list(enumerate(entries)))
                                 if isinstance(e, dict)})


def _dump_sample(dump: _Dump | None, s: dict[str, Any], layout: str, tokens: np.ndarray,
                 where: str) -> dict[str, Any] | None:
    """The rollout-dump entry of train sample ``s`` (by rollout_position, else sample_index = index), checked."""
    if dump is None:
        return None
    path, entries = dump.path, dump.entries
    pos = s.get("rollout_position") if layout == "v2" else None
    if pos is None:
        pos = dump.by_index.get(s["sample_index"]) if s.get("sample_index") is not None else None
        if pos is None:
            return None
    pos = _int(pos, where, "rollout_position")
    if not 0 <= pos < len(entries) or not isinstance(entries[pos], dict):
        raise InputFormatError(f"{where}: rollout_position {pos} is not a sample of {path} ({len(entries)} "
                               f"samples); {_ASIDE}")
    e = entries[pos]
    theirs = _array(e.get("tokens", []), f"{path} samples[{pos}]", "tokens", "int")
    if not np.array_equal(theirs, tokens):
        raise InputFormatError(f"{where} and {path} samples[{pos}] hold different tokens: the rollout dump is not "
                               f"this train dump's; {_ASIDE}")
    return e


def _sample(s: dict[str, Any], i: int, path: Path, spec: _Spec, loaded: _Loaded, dump: _Dump | None,
            order: dict[str, int], cfg: ImportConfig) -> ImportedRollout | None:
    """One train sample as an :class:`ImportedRollout` (None: an empty response)."""
    where = f"{path} samples[{i}]"

    def need(key: str) -> Any:
        if s.get(key) is None:
            raise InputFormatError(f"{where}: missing {key!r} (found keys {sorted(map(str, s))})")
        return s[key]

    tokens = _array(need("tokens"), where, "tokens", "int")
    n = _int(need("response_lengths"), where, "response_lengths")
    if "total_lengths" in s and _int(s["total_lengths"], where, "total_lengths") != len(tokens):
        raise InputFormatError(f"{where} 'total_lengths': {s['total_lengths']} but 'tokens' holds {len(tokens)}")
    if not 0 <= n <= len(tokens):
        raise InputFormatError(f"{where} 'response_lengths': {n} is not within the {len(tokens)} tokens")
    for key in _RESPONSE_LONG:
        if s.get(key) is not None:
            a = _array(s[key], where, key, "mask" if key == "loss_masks" else "float")
            if len(a) != n:
                cp = (" The older per-rank layout stores each context-parallel rank's chunk only; drift reads it "
                      "without context parallelism, or re-dump with a slime that writes train_data/{rollout_id}.pt."
                      if loaded.layout == "v1" else "")
                raise InputFormatError(f"{where} {key!r}: {len(a)} entries but response_lengths is {n}.{cp}")
    student = _array(need(spec.student), where, spec.student, "float")
    teacher = _array(need("teacher_log_probs"), where, "teacher_log_probs", "float") if spec.teacher else None
    if not spec.teacher and s.get("teacher_log_probs") is not None:
        raise InputFormatError(f"{where}: holds 'teacher_log_probs' but the first file's samples do not; import "
                               "these files into separate --out folders")
    roll = _array(need("rollout_log_probs"), where, "rollout_log_probs", "float") if spec.rollout else None
    if n == 0:
        return None
    prompt, response = tokens[:len(tokens) - n].tolist(), tokens[len(tokens) - n:].tolist()
    e = _dump_sample(dump, s, loaded.layout, tokens, where)
    pos = s.get("rollout_position")
    reward = _number(s.get("local_raw_reward"))
    if reward is None and loaded.raw_reward is not None and isinstance(pos, int) and 0 <= pos < len(
            loaded.raw_reward):
        reward = _number(loaded.raw_reward[pos])
    if reward is None and e is not None:
        reward = _number(e.get("reward"))
    truncated = bool(_int(s["truncated"], where, "truncated")) if s.get("truncated") is not None else None
    finished = None if truncated is None else not truncated
    if e is not None and isinstance(e.get("status"), str):
        finished, truncated = e["status"] == "completed", e["status"] == "truncated"
    key = hashlib.sha256(bytes(np.asarray(prompt, np.int64))).hexdigest()
    sample_id: int | None = order.get(key, 0)
    order[key] = (sample_id or 0) + 1
    if loaded.layout == "v1":  # one step spans several rank files: a run-unique id keeps (step, key, id) unique
        idx = s.get("sample_index")
        sample_id = _int(idx, where, "sample_index") if idx is not None else None
    mask = s.get("loss_masks")
    return ImportedRollout(
        prompt_ids=prompt, response_ids=response, student_logprob=student, teacher_logprob=teacher,
        rollout_logprob=roll, step=loaded.rollout_id, prompt_id=None, sample_id=sample_id,
        loss_mask=None if mask is None else _array(mask, where, "loss_masks", "mask").astype(bool), reward=reward,
        finished=finished, truncated=truncated,
        prompt_text=e.get("prompt") if e is not None and isinstance(e.get("prompt"), str) else None,
        response_text=e.get("response") if e is not None and isinstance(e.get("response"), str) else None,
        teacher_id=cfg.teacher_id, teacher_revision=cfg.teacher_revision, source=where,
        extra={"rollout_position": pos, "sample_index": s.get("sample_index"),
               "group_index": None if e is None else e.get("group_index")})


def _v1_keys(samples: list[dict[str, Any]]) -> list[Any]:
    """Identity of each sample of an older per-rank file across ranks: sample_index, else tokens + occurrence."""
    keys, seen = [], {}
    for s in samples:
        if s.get("sample_index") is not None:
            keys.append(("index", int(s["sample_index"])))
            continue
        h = hashlib.sha256(bytes(_array(s.get("tokens", []), "", "tokens", "int").astype(np.int64))).hexdigest()
        seen[h] = seen.get(h, 0) + 1
        keys.append(("tokens", h, seen[h]))
    return keys


def _relations(samples: list[dict[str, Any]], spec: _Spec) -> dict[str, Any]:
    """How slime's own columns relate to student and teacher on the first file (recorded, never fatal)."""
    def diff(key: str, a: str, b: str) -> float | None:
        worst = None
        for s in samples:
            try:
                x, y, z = (_array(s[k], "", k, "float") for k in (key, a, b))
            except (KeyError, InputFormatError):  # absent or malformed: the import itself names it
                continue
            if len(x) == len(y) == len(z):
                worst = max(worst or 0.0, float(np.max(np.abs(x - (y - z)), initial=0.0)))
        return worst

    out: dict[str, Any] = {}
    if any(s.get("opd_reverse_kl") is not None for s in samples):
        d = {k: diff("opd_reverse_kl", k, "teacher_log_probs") for k in ("log_probs", "rollout_log_probs")}
        agree = [k for k, v in d.items() if v is not None and v < _TOL]
        out["opd_reverse_kl"] = {
            "max_abs_diff": d, "agrees_with": f"{agree[0]} - teacher_log_probs" if agree else None,
            "meaning": "slime's apply_opd_kl_to_advantages: reverse_kl = student - teacher (drift's k1 = "
                       "-advantage); the student is rollout_log_probs under --use-rollout-logprobs" if agree else
                       "opd_reverse_kl matches neither log_probs - teacher_log_probs nor rollout_log_probs - "
                       "teacher_log_probs: check the dump before trusting its teacher column"}
    if any(s.get("kl") is not None for s in samples):
        out["kl"] = ("slime's kl is the penalty against the reference model (compute_approx_kl(log_probs, "
                     "ref_log_probs), zeros when kl_coef = 0), not a teacher quantity; not imported")
    if spec.teacher and any(s.get("advantages") is not None for s in samples):
        d = diff("advantages", "teacher_log_probs", spec.student)
        out["advantages"] = {"max_abs_diff_from_teacher_minus_student": d, "pure_distillation": d is not None
                             and d < _TOL, "imported": False,
                             "why": "slime's advantages mix the estimator's returns with -opd_kl_coef * (student - "
                                    "teacher) and optional whitening; drift recomputes advantage = teacher - student"}
    return out


def _probe(files: tuple[Path, ...], cfg: ImportConfig) -> _Loaded:
    """The file that tells the columns: the first; in the older layout the first rank file of the first rollout
    holding ``log_probs`` (non-last pipeline stages hold none, only the sampler's ``rollout_log_probs``)."""
    first = _load(files[0], cfg)
    if first.layout == "v2" or (first.samples and all(s.get("log_probs") is not None for s in first.samples)):
        return first
    rid = _file_key(files[0])[0]
    for f in files[1:]:
        if _file_key(f)[0] != rid:
            break
        other = _load(f, cfg)
        if other.samples and all(s.get("log_probs") is not None for s in other.samples):
            return other
    return first


def open_slime(cfg: ImportConfig) -> Any:
    """The :class:`~drift.ingest.run.SourcePlan` of a slime ``--dump-details`` folder (or its train_data, or one
    train file). The first file is read to learn the layout and columns; every later file must hold the same.

    Raises:
        InputFormatError: no train dump found, or the first file is malformed / of an unknown layout.
    """
    from drift.ingest.run import SourcePlan, resolve_tokenizer

    root = Path(cfg.path)
    if not root.exists():
        raise InputFormatError(f"{root} does not exist: pass slime's --dump-details DIR")
    train_dir, dump_root = _dirs(root)
    files, ignored = slime_files(root)
    if not files:
        raise InputFormatError(f"{root}: no slime train dumps (train_data/{{rollout_id}}.pt or the older "
                               f"train_data/{{rollout_id}}_{{rank}}.pt) found in {train_dir}")
    tokenizer, tokenizer_source = resolve_tokenizer(cfg, dump_root / "tokenizer")
    ids = {}
    for f in files:
        ids.setdefault(_file_key(f)[0], set()).add("v1" if _V1_NAME.match(f.name) else "v2")
    both = sorted(i for i, kinds in ids.items() if len(kinds) > 1)
    if both:
        raise InputFormatError(f"{train_dir}: rollout {both[0]} has both a {both[0]}.pt and per-rank "
                               f"{both[0]}_{{rank}}.pt dumps (two runs in one folder?); keep one of them")
    probe = _probe(files, cfg)
    first = probe.samples

    def everywhere(key: str) -> bool:
        return bool(first) and all(s.get(key) is not None for s in first)

    student = "log_probs" if everywhere("log_probs") else "rollout_log_probs" if everywhere(
        "rollout_log_probs") else None
    if student is None:
        raise _bad(files[0], "the samples hold neither 'log_probs' (trainer-side) nor 'rollout_log_probs' (sampler): "
                             "no student log-probs to import")
    spec = _Spec(student=student, teacher=everywhere("teacher_log_probs"),
                 rollout=everywhere("rollout_log_probs") and student != "rollout_log_probs")
    rollout_dir = dump_root / "rollout_data"
    evals = sorted(p.name for p in rollout_dir.glob("eval_*.pt")) if rollout_dir.is_dir() else []
    notes: dict[str, Any] = {
        "layout": ("slime --dump-details train_data/{rollout_id}.pt (format_version 2)" if probe.layout == "v2" else
                   "slime's older per-rank train_data/{rollout_id}_{rank}.pt (rollout_data columns); each sample "
                   "kept once, from the lowest rank holding it"),
        "step": "the file's rollout_id (per-sample rollout_ids are batch-local and ignored)",
        "student_logprob": student + (" (trainer-side)" if student == "log_probs" else
                                      " (the sampler's: the dump holds no trainer-side log_probs)"),
        "teacher_logprob": "teacher_log_probs" if spec.teacher else
        "absent: the dump holds no teacher_log_probs (the run did not use --use-opd)",
        "rollout_logprob": "rollout_log_probs" if spec.rollout else None,
        "rollout_dump": (f"{rollout_dir.name}/{{rollout_id}}.pt joined by "
                         f"{'rollout_position' if probe.layout == 'v2' else 'sample_index = index'} (text, status)"
                         if rollout_dir.is_dir() else "absent: finished = not truncated, no text from the dump"),
        "reward": "local_raw_reward, else raw_reward[rollout_position], else the rollout dump's reward",
        "prompt_key": "hash of the prompt ids (slime's group_index counts prompt draws, not prompts)",
        "temperature": None,
        "temperature_note": "slime computes log_probs (and Megatron / SGLang teacher log-probs) at "
                            "--rollout-temperature, which the dump does not record; pass --temperature for the "
                            "re-score check and the record",
        "eval_dumps_skipped": evals, "ignored_files": ignored,
        **_relations(first, spec),
    }
    siblings: dict[int, list[Path]] = {}
    for f in files:
        if _V1_NAME.match(f.name):
            siblings.setdefault(_file_key(f)[0], []).append(f)
    held: dict[Path, set[Any]] = {}  # older layout: the samples a rank file holds with a student column
    dumps: dict[str, Any] = {}

    def holds(path: Path, loaded: _Loaded | None = None) -> set[Any]:
        if path not in held:
            loaded = loaded or _load(path, cfg)
            keys = _v1_keys(loaded.samples)
            held[path] = {k for k, s in zip(keys, loaded.samples, strict=True) if s.get(spec.student) is not None}
        return held[path]

    def iter_file(path: Path) -> Iterator[ImportedRollout]:
        loaded = _load(path, cfg)
        skip: set[Any] = set()
        keys: list[Any] = [None] * len(loaded.samples)
        if loaded.layout == "v1":
            keys = _v1_keys(loaded.samples)
            mine = holds(path, loaded)
            group = siblings.get(_file_key(path)[0], [path])
            for other in group[:group.index(path)] if path in group else []:
                skip |= holds(other)
            if not mine and not any(holds(o) for o in group):
                raise _bad(path, f"no rank file of rollout {loaded.rollout_id} holds {spec.student!r}")
        if dumps.get("id") != loaded.rollout_id:  # the rank files of one rollout share its dump
            dumps.update(id=loaded.rollout_id, dump=_rollout_dump(dump_root, loaded.rollout_id, cfg))
        dump = dumps["dump"]
        order: dict[str, int] = {}
        for i, s in enumerate(loaded.samples):
            if loaded.layout == "v1" and (keys[i] in skip or s.get(spec.student) is None):
                continue
            r = _sample(s, i, path, spec, loaded, dump, order, cfg)
            if r is not None:
                yield r

    missing = () if spec.teacher else (
        "every teacher column (advantage, k1, k3, C_t ...): the slime dump holds no teacher_log_probs (no "
        f"--use-opd); `drift score --rollouts {cfg.out} --student S --teacher T --out {cfg.out}-full` adds them",)
    return SourcePlan(format="slime", root=root, files=files, iter_file=iter_file, support="sampled",
                      has_teacher=spec.teacher, teacher_source="slime_dump" if spec.teacher else None,
                      tokenizer=tokenizer, tokenizer_source=tokenizer_source, notes=notes, missing_analyses=missing)
