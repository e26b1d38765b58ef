"""NeMo RL's per-step training dumps (``drift import nemo-rl LOG_DIR [--advantages distillation]``).

Read from NeMo RL's source (commit 7ea279ab, ``nemo_rl/algorithms/grpo.py`` sync and async GRPO, ``grpo_sync.py``,
``ppo.py``; ``nemo_rl/utils/logger.py`` ``Logger.log_batched_dict_as_jsonl``): every training step writes
``{log_dir}/train_data_step{N}.jsonl`` (N = the step just trained, 1-based), one line per sample of the batch.
The logger slices the batch one sample at a time, so every value keeps a batch dimension of one::

    {"content": [["<rendered prompt>", "<response text>"]], "rewards": [1.0], "input_lengths": [57],
     "token_ids": [[...L ints]], "token_loss_mask": [[0, ..., 0, 1, ..., 1, 0, ...]], "sample_loss_mask": [1.0],
     "advantages": [[...L]], "generation_logprobs": [[...L]], "prev_logprobs": [[...L]], "idx": 0}

(optional ``agent_ref``, and ``filtered_rewards`` with dynamic sampling; a line without the batch dimension is
read the same way). The arrays cover prompt + response of the whole conversation, right-padded to the batch
maximum (rounded up to ``make_sequence_length_divisible_by``): ``token_ids`` with the pad id, the others with 0.

- ``input_lengths``: the valid length (prompt + response) of the sample; everything after it is padding.
- ``token_loss_mask``: 1 on the tokens of assistant messages the policy generated in this rollout, 0 on the
  prompt, on tool / environment messages between turns and on padding. The **response** imported is the span from
  the first to the last position where it is 1 (contiguous for single-turn; multi-turn spans keep their tool
  tokens, with ``loss_mask`` False there); the **prompt** is every token before it; tokens after the last
  generated one (a final environment message) and padding are dropped.
- ``prev_logprobs`` (the *trainer's* forward of the policy, at the generation temperature; the student) and
  ``generation_logprobs`` (vLLM's log-prob of each sampled token; the sampler) are aligned with the tokens:
  entry i is log p(token_ids[i] | token_ids[:i]) (the trainer prepends a 0 for position 0; vLLM's entries are 0
  outside generated messages, so at tool tokens inside a span ``rollout_logprob`` is set to the trainer's value).
- ``sample_loss_mask``: 0 for samples the run excluded (overlong filtering, ``seq_logprob_error_threshold``);
  ``loss_mask`` is ``token_loss_mask AND sample_loss_mask`` on the response span (recorded for every rollout).
- ``advantages``: whatever the advantage estimator produced, times ``token_loss_mask * sample_loss_mask``. With
  ``adv_estimator: opd`` (MOPD) they are ``teacher_logprobs - prev_logprobs`` per token, so **only with
  ``--advantages distillation``** ``teacher_logprob = prev_logprobs + advantages`` (``teacher_source``
  ``nemo_prev_plus_advantage``); see :func:`_verdict` for the checks that refuse advantages of another kind.
- ``idx`` is the line's index in the file, not a prompt id: the cluster key is a hash of the prompt's token ids
  (the generations of one prompt share them). ``rewards`` (the environment's total reward) is the reward.
- ``content`` (per-message strings without roles) is not used: texts are decoded from the ids when a tokenizer
  is known (``--tokenizer`` or ``--student``).

NeMo RL writes no step file with ``env.should_log_nemo_gym_responses: true``; ``val_data_step{N}.jsonl`` holds only
``content`` and ``rewards`` (skipped); ``distillation.py`` (logit distillation) dumps only ``content`` and
``input_lengths`` (refused: no token ids). Files are streamed line by line; with ``--advantages distillation``
each file is read twice (checked first, so a refused file writes nothing).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drift.collect.prompts import iter_jsonl, raise_input_problems
from drift.errors import DriftWarning, InputFormatError
from drift.ingest.config import ImportConfig
from drift.ingest.records import ImportedRollout
from drift.ingest.run import SourcePlan, default_step, resolve_tokenizer

__all__ = ["nemo_files", "open_nemo_rl", "parse_line"]

NEMO_COMMIT = "7ea279abfbeb698b092856d0dab61e7cf39bc909"
_TRAIN = re.compile(r"^train_data_step(\d+)\.jsonl$")
_VAL = re.compile(r"^val_data_step(\d+)\.jsonl$")
_ARRAYS = ("token_ids", "token_loss_mask", "prev_logprobs", "generation_logprobs")
POSITIVE_TOL = 1e-3  # a derived teacher log-prob above this is not a log-prob
_DISTILL_HELP = ("--advantages distillation says the dumped advantages are pure teacher - student gaps "
                 "(adv_estimator: opd); import without it to keep the student and sampler log-probs only")


def nemo_files(path: Path) -> tuple[tuple[Path, ...], list[str]]:
    """The step files at ``path`` in step order (numeric), and the validation dumps skipped.

    Raises:
        InputFormatError: there is nothing to import (the message says why NeMo RL may have written none).
    """
    if path.is_file():
        if _VAL.match(path.name):
            raise InputFormatError(f"{path} is a validation dump (content and rewards only, no token ids or "
                                   "log-probs); import the train_data_step{N}.jsonl files of the log dir")
        return (path,), []
    if not path.is_dir():
        raise InputFormatError(f"{path} does not exist (give NeMo RL's log dir or one train_data_step{{N}}.jsonl)")
    train = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := _TRAIN.match(p.name)) and p.is_file())
    val = sorted(p.name for p in path.iterdir() if _VAL.match(p.name))
    if not train:
        deeper = sorted({str(p.parent) for p in path.glob("*/train_data_step*.jsonl")})
        hint = (f" They are in sub-folders, one per run: pass one of {deeper[:5]}" if deeper else
                " NeMo RL writes none when env.should_log_nemo_gym_responses is true (NeMo Gym logs the responses "
                "instead); set it to false to get them.")
        raise InputFormatError(f"{path}: no train_data_step{{N}}.jsonl files.{hint}")
    return tuple(p for _, p in train), val


def _unwrap(value: Any, array: bool) -> Any:
    """Drop the logger's batch dimension of one (``[[...]]`` -> ``[...]``, ``[x]`` -> ``x``)."""
    if isinstance(value, list) and len(value) == 1 and (isinstance(value[0], list) or not array):
        return value[0]
    return value


def _array(value: Any, kinds: str, where: str, problems: list[str]) -> np.ndarray | None:
    try:
        a = np.asarray(_unwrap(value, True))
    except ValueError:
        a = None
    if a is None or a.ndim != 1 or (a.size and a.dtype.kind not in kinds):
        problems.append(f"{where}: must be a list of {'integers' if kinds == 'iu' else 'numbers'}")
        return None
    return a


@dataclass
class _Sample:
    """One parsed line: the valid (unpadded) part of its arrays and the response span."""

    ids: np.ndarray
    mask: np.ndarray
    prev: np.ndarray
    gen: np.ndarray
    adv: np.ndarray | None
    start: int
    end: int
    sample_mask: bool
    reward: float | None


def _scalar(obj: dict[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    v = _unwrap(obj.get(key), False)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        problems.append(f"{where} {key!r}: must be a number, got {v!r}")
        return None
    return float(v)


def parse_line(obj: dict[str, Any], where: str, problems: list[str], *, distillation: bool) -> _Sample | None:
    """Validate one line of a step file; problems go to ``problems`` (all of them, then None)."""
    n0 = len(problems)
    need = (*_ARRAYS, "input_lengths", *(("advantages",) if distillation else ()))
    missing = [k for k in need if obj.get(k) is None]
    if missing:
        why = (" This is the layout of NeMo RL's distillation.py (logit distillation), which dumps only content "
               "and input_lengths: nothing to import." if set(obj) <= {"content", "input_lengths", "idx"} else "")
        problems.append(f"{where}: missing {missing} (found keys {sorted(obj)}).{why}")
        return None
    arrays = {k: _array(obj[k], "iu" if k == "token_ids" else "biuf", f"{where} {k!r}", problems)
              for k in (*_ARRAYS, "advantages") if k in need}
    n = _unwrap(obj["input_lengths"], False)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        problems.append(f"{where} 'input_lengths': must be a non-negative integer, got {n!r}")
    sample_mask = _scalar(obj, "sample_loss_mask", where, problems)
    reward = _scalar(obj, "rewards", where, problems)
    if len(problems) > n0:
        return None
    lens = {k: len(a) for k, a in arrays.items() if a is not None}
    if len(set(lens.values())) > 1:
        problems.append(f"{where}: the arrays must all cover prompt + response + padding, but have {lens} entries")
    elif n > lens["token_ids"]:
        problems.append(f"{where}: 'input_lengths' is {n} but the arrays have {lens['token_ids']} entries")
    if len(problems) > n0:
        return None
    ids = arrays["token_ids"]
    if ids.size and ids.min() < 0:
        problems.append(f"{where} 'token_ids': token ids must be >= 0")
    mask = arrays["token_loss_mask"]
    if not np.isin(mask, (0, 1)).all():
        problems.append(f"{where} 'token_loss_mask': must hold 0 and 1 only")
    elif mask[n:].any():
        problems.append(f"{where} 'token_loss_mask' is 1 at position {n + int(np.argmax(mask[n:]))}, past "
                        f"'input_lengths' {n} (padding)")
    if len(problems) > n0:
        return None
    mask = mask[:n].astype(bool)
    on = np.flatnonzero(mask)
    start, end = (int(on[0]), int(on[-1]) + 1) if on.size else (n, n)
    if start == 0 and end > 0:
        problems.append(f"{where}: 'token_loss_mask' is 1 at position 0, so no prompt token precedes the response "
                        "(position 0 holds no log-prob in NeMo RL)")
        return None
    f64 = {k: arrays[k][:n].astype(np.float64) for k in ("prev_logprobs", "generation_logprobs", "advantages")
           if k in arrays}
    for k, a in f64.items():
        if not np.isfinite(a[start:end]).all():
            problems.append(f"{where} {k!r}: non-finite values on the response")
    prev = f64["prev_logprobs"]
    if end - start >= 4 and not prev[start:end].any() and f64["generation_logprobs"][start:end].any():
        problems.append(f"{where}: 'prev_logprobs' is 0 on every response token: the run skipped the trainer's "
                        "forward (loss_fn.force_on_policy_ratio: true without grpo.seq_logprob_error_threshold), "
                        "so the dump holds no trainer-side student log-probs")
    if len(problems) > n0:
        return None
    return _Sample(ids=ids[:n].astype(np.int64), mask=mask, prev=prev, gen=f64["generation_logprobs"],
                   adv=f64.get("advantages"), start=start, end=end,
                   sample_mask=sample_mask is None or sample_mask != 0, reward=reward)


def iter_samples(path: Path, *, distillation: bool) -> Iterator[tuple[int, _Sample]]:
    """(line number, sample) of every line of one step file, streamed; stops at the first malformed line with the
    file and line named (a cut-off last line included)."""
    problems: list[str] = []
    for lineno, obj in iter_jsonl(path, problems):
        raise_input_problems(path, problems)
        s = parse_line(obj, f"line {lineno}", problems, distillation=distillation)
        raise_input_problems(path, problems)
        yield lineno, s  # type: ignore[misc]
    raise_input_problems(path, problems)


@dataclass
class _Scan:
    """Statistics of one file's advantages on the tokens the run trained on (pass one of a distillation import)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    n_samples: int = 0
    varying: int = 0  # samples whose advantages vary across their trained tokens
    constant: list[int] = field(default_factory=list)  # ... that hold one nonzero value (sequence-level)
    positive: list[int] = field(default_factory=list)  # lines where prev + advantage > 0
    n_positive: int = 0
    overwritten: list[int] = field(default_factory=list)  # lines with a run of >= 3 equal nonzero values
    excluded: list[int] = field(default_factory=list)  # sample_loss_mask 0: advantages zeroed, teacher unknown
    ends: dict[str, list[Any]] = field(default_factory=lambda: {"hi": [-math.inf, set(), []],
                                                                         "lo": [math.inf, set(), []]})

    def add(self, lineno: int, s: _Sample) -> None:
        self.n_samples += 1
        if not s.sample_mask:
            self.excluded.append(lineno)
            return
        on = np.flatnonzero(s.mask)
        a = s.adv[on]  # type: ignore[index]
        if not a.size:
            return
        self.n += a.size
        self.total += float(a.sum())
        self.total_sq += float((a * a).sum())
        if a.size >= 2:
            if a.min() != a.max():
                self.varying += 1
            elif a[0] != 0:
                self.constant.append(lineno)
        pos = int((s.prev[on] + a > POSITIVE_TOL).sum())
        if pos:
            self.positive.append(lineno)
            self.n_positive += pos
        eq = (a[1:] == a[:-1]) & (a[1:] != 0)
        if (eq[1:] & eq[:-1]).any():
            self.overwritten.append(lineno)
            return  # an override's value (e.g. -5) would hide the clip bounds
        for key, v in (("hi", a.max()), ("lo", a.min())):
            e = self.ends[key]
            if v != e[0] and (v > e[0]) != (key == "hi"):
                continue
            if v != e[0]:
                e[:] = [float(v), set(), []]
            # generations of one prompt share prefixes, hence gaps: count distinct contexts, not tokens
            e[1].update(hash(s.ids[:i + 1].tobytes()) for i in on[a == v])
            e[2].append(lineno)


def _lines(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")


def _verdict(path: Path, scan: _Scan) -> dict[int, str]:
    """Whether a file's advantages can be read as teacher - student gaps; the lines to drop, with why.

    The rule (advantages on the tokens the run trained on, samples with ``sample_loss_mask`` 1):

    1. refuse when as many samples hold one nonzero value over their tokens as hold varying values: sequence-level
       advantages (GRPO, RLOO, GDPO, REINFORCE) broadcast over the response, no per-token gap;
    2. refuse when the file's advantages have mean 0 and standard deviation 1 (|mean| < 0.01, |std - 1| < 0.03 over
       >= 32 tokens): they were normalized, which a gap never is exactly;
    3. refuse when ``prev_logprobs + advantages`` exceeds 0 (+1e-3) anywhere: that is no log-prob, so something
       else (a reward advantage mixed in, RLVR + MOPD; a scaling) is in the advantages;
    4. drop the samples (and warn) whose advantages hold a run of >= 3 equal nonzero values (a message-level
       override: grpo.invalid_tool_call_advantage / malformed_thinking_advantage), or the file's largest
       (>= 1) or smallest (<= -1) value, among the samples without such a run, in two or more
       different token contexts (grpo.advantage_clip_high / _low clipping), or whose
       ``sample_loss_mask`` is 0 (their advantages were zeroed): their teacher cannot be recovered. Refuse when
       that leaves fewer than half of the file's samples.

    Raises:
        InputFormatError: rule 1, 2, 3, or too few samples left.
    """
    head = f"{path}: cannot derive the teacher as prev_logprobs + advantages:"
    if scan.constant and len(scan.constant) >= scan.varying:
        raise InputFormatError(
            f"{head} {len(scan.constant)} sample(s) hold one nonzero advantage over every response token (lines "
            f"{_lines(scan.constant)}) and {scan.varying} vary: these are sequence-level advantages (GRPO / RLOO "
            f"style), not per-token distillation gaps. {_DISTILL_HELP}.")
    if scan.n >= 32:
        mean = scan.total / scan.n
        std = math.sqrt(max(scan.total_sq / scan.n - mean * mean, 0.0))
        if abs(mean) < 0.01 and abs(std - 1) < 0.03:
            raise InputFormatError(
                f"{head} the advantages have mean {mean:.3g} and standard deviation {std:.3g} over {scan.n} tokens: "
                f"they were normalized, so they are no longer teacher - student gaps. {_DISTILL_HELP}.")
    if scan.positive:
        raise InputFormatError(
            f"{head} prev_logprobs + advantages is > 0 at {scan.n_positive} token(s) (lines "
            f"{_lines(scan.positive)}), and a log-prob is <= 0: the advantages hold more than the teacher - student "
            f"gap (a reward advantage mixed in, as in RLVR + MOPD, or a scaling). {_DISTILL_HELP}.")
    drop = dict.fromkeys(scan.excluded, "sample_loss_mask 0 (advantages zeroed)")
    for key, bound, name in (("hi", 1.0, "advantage_clip_high"), ("lo", -1.0, "advantage_clip_low")):
        v, contexts, lines = scan.ends[key]
        if len(contexts) >= 2 and (v >= bound if key == "hi" else v <= bound):
            drop.update(dict.fromkeys(lines, f"clipped at {v:g} (grpo.{name}?)"))
    drop.update(dict.fromkeys(scan.overwritten, "a run of equal advantages (a message-level advantage override)"))
    if drop and len(drop) * 2 > scan.n_samples:
        raise InputFormatError(f"{head} {len(drop)} of {scan.n_samples} samples hold advantages that are no gaps "
                               f"(e.g. line {next(iter(drop))}: {next(iter(drop.values()))}). {_DISTILL_HELP}.")
    if drop:
        reasons = sorted(set(drop.values()))
        warnings.warn(f"{path}: {len(drop)} of {scan.n_samples} samples dropped (their teacher log-probs cannot be "
                      f"recovered from the advantages): {'; '.join(reasons)}; e.g. line {next(iter(drop))}",
                      DriftWarning, stacklevel=3)
    return drop


def _rollout(path: Path, lineno: int, s: _Sample, step: int, cfg: ImportConfig,
             distillation: bool) -> ImportedRollout:
    sl = slice(s.start, s.end)
    trained = s.mask[sl]
    student = s.prev[sl]
    rollout = np.where(trained, s.gen[sl], student)  # vLLM dumps 0 outside generated messages
    teacher = student + s.adv[sl] if distillation else None  # type: ignore[index]
    return ImportedRollout(
        prompt_ids=s.ids[:s.start].tolist(), response_ids=s.ids[sl].tolist(), student_logprob=student,
        teacher_logprob=teacher, rollout_logprob=rollout, step=step, loss_mask=trained & s.sample_mask,
        reward=s.reward, teacher_id=cfg.teacher_id if distillation else None,
        teacher_revision=cfg.teacher_revision if distillation else None, source=f"{path}:{lineno}")


def _step(path: Path, cfg: ImportConfig) -> int:
    m = _TRAIN.match(path.name)
    return int(m.group(1)) if m else default_step(cfg)


def open_nemo_rl(cfg: ImportConfig) -> SourcePlan:
    """The :class:`~drift.ingest.run.SourcePlan` of a NeMo RL log dir (or one step file); see the module docstring.

    Raises:
        InputFormatError: no step file at ``cfg.path`` (with why NeMo RL may have written none).
    """
    root = Path(cfg.path)
    files, val = nemo_files(root)
    distillation = cfg.advantages == "distillation"
    tokenizer, tokenizer_source = resolve_tokenizer(cfg)

    def iter_file(path: Path) -> Iterator[ImportedRollout]:
        step = _step(path, cfg)
        drop: dict[int, str] = {}
        if distillation:
            scan = _Scan()
            for lineno, s in iter_samples(path, distillation=True):
                scan.add(lineno, s)
            drop = _verdict(path, scan)
        for lineno, s in iter_samples(path, distillation=distillation):
            if lineno not in drop:
                yield _rollout(path, lineno, s, step, cfg, distillation)

    notes: dict[str, Any] = {
        "layout": "NeMo RL train_data_step{N}.jsonl (Logger.log_batched_dict_as_jsonl; arrays over prompt + "
                  "response, right-padded, values wrapped in a batch dimension of one)",
        "verified_against": f"NVIDIA-NeMo/RL@{NEMO_COMMIT}: nemo_rl/algorithms/grpo.py, nemo_rl/utils/logger.py, "
                            "nemo_rl/data/llm_message_utils.py, nemo_rl/models/policy/lm_policy.py",
        "step": "N of train_data_step{N}.jsonl (the training step just taken, 1-based)"
                if all(_TRAIN.match(f.name) for f in files) else f"--step ({default_step(cfg)}): a file name "
                "without train_data_step{N}",
        "response": "first..last position with token_loss_mask 1; tool / environment tokens inside it have "
                    "loss_mask false (and rollout_logprob = the trainer's, vLLM dumps 0 there); tokens after it "
                    "and padding past input_lengths dropped",
        "loss_mask": "token_loss_mask AND sample_loss_mask",
        "student": "prev_logprobs (trainer forward at the generation temperature: pass --temperature for the "
                   "re-score check)", "rollout": "generation_logprobs (vLLM)",
        "reward": "rewards (the total reward; filtered_rewards of dynamic sampling are not used)",
        "prompt_id": "none in the dump (idx is the line index): a hash of the prompt's token ids",
        "unused": "content, idx, agent_ref, filtered_rewards",
    }
    if val:
        notes["skipped"] = f"{len(val)} validation dump(s) ({', '.join(val[:3])}{', ...' if len(val) > 3 else ''}): "\
                           "content and rewards only"
    if distillation:
        notes["teacher"] = ("prev_logprobs + advantages (--advantages distillation); refused when the advantages "
                            "are sequence-level, normalized or give a positive log-prob; samples with a clipped or "
                            "overridden advantage, or sample_loss_mask 0, dropped with a warning")
        missing: tuple[str, ...] = ()
    else:
        missing = (f"every teacher column (teacher_logprob, advantage, k1, k3, S_t, C_t, C_t/C_T): NeMo RL dumps no "
                   f"teacher log-probs. If the run's advantages are pure distillation gaps (adv_estimator: opd), "
                   f"re-import with --advantages distillation; otherwise `drift score --rollouts {cfg.out} "
                   f"--student S --teacher T --out {cfg.out}-full` adds them",)
    return SourcePlan(format="nemo-rl", root=root, files=files, iter_file=iter_file, support="sampled",
                      has_teacher=distillation, teacher_source="nemo_prev_plus_advantage" if distillation else None,
                      tokenizer=tokenizer, tokenizer_source=tokenizer_source, notes=notes, missing_analyses=missing)
