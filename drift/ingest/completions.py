"""``drift import completions PATH --format trl|verl|swift``: text dumps, re-tokenized and re-scored (full support).

The three formats, as their trainers write them (read from huggingface/trl f2cd577, verl-project/verl 1dda039 and
modelscope/ms-swift 3602360):

- ``trl``: ``output_dir/completions/completions_{global_step:05d}.parquet``, written by ``GRPOTrainer.log`` (and its
  subclasses) on the main process: columns ``step`` (int64, the logging step), ``prompt`` and ``completion`` (text:
  ``batch_decode(ids, skip_special_tokens=True)``, so BOS, EOS and special template markers are gone; a
  conversational prompt is the *rendered* template minus its special tokens), one float column per reward function,
  any ``log_extra`` columns, and ``advantage``. The rows come from a deque of ``generation_batch_size`` that is never
  cleared, so a row logged at one step is logged again at the next ones: a row that also appears in the previous
  file (same prompt, completion, rewards and advantage) is a repeat and is imported once, at the step of the first
  file that holds it (the trainer generated it at or before that step).
- ``verl``: ``{trainer.rollout_data_dir}/{global_step}.jsonl``, one line per sample: ``input`` / ``output``
  (``tokenizer.decode(..., skip_special_tokens=True)`` of the padded prompt / response ids; the prompt went through
  the chat template), ``gts``, ``score`` (sum of token-level scores), ``step``, reward-extra keys and ``request_id``
  (per sample; ``ray_trainer``) or ``uid`` (``v1`` trainer: ``{prompt uid}_{session}_{output}``; its prompt part
  groups the samples of one prompt). Steps never repeat rows.
- ``swift``: ``output_dir/completions.jsonl``, one line per logging step holding equal-length lists ``step``
  (strings), ``prompt`` (``template.safe_decode`` of the prompt ids: special tokens *kept*), ``completion`` (the
  engine's response, stop token stripped), one list per reward function, ``advantages``, optional ``entropy``,
  ``solution``, ``num_turns``. GRPO's lists come from never-cleared deques (repeats are dropped as for TRL); GKD
  lines (no ``advantages``) clear theirs.

Template restoration (recorded per rule in ``config.json`` ``source.template``):

- ``messages``: a prompt given as chat messages is rendered with the tokenizer's chat template (``--chat-template``).
- ``restored`` (trl, verl): text decoded without special tokens is matched against the chat template's stripped
  rendering of 1 to 3 user turns (with or without a system turn); the messages found are re-rendered and accepted
  only when their ids decode (``skip_special_tokens=True``) to exactly the dumped text.
- ``as_is``: text that still carries the template (a special token, or it opens like the template and ends with
  its generation prompt) is tokenized as it is, without adding special tokens (swift; trl/verl text that no parse
  reproduces, with a warning).
- ``user_turn``: other text becomes one user turn of the chat template (verl and swift always template;
  ``--chat-template always`` for trl).
- ``raw``: otherwise text is tokenized with the tokenizer's own special tokens (BOS): TRL's rule for a
  non-conversational prompt, and every format's under ``--chat-template never``.

A completion is tokenized without special tokens. The trainers strip the stop token and do not say whether the
response hit the length cap, so every completion counts as finished: the chat template's end-of-turn token (the
tokenizer's EOS for ``raw`` prompts) is appended unless the text already ends with a stop token. ``prompt_key``
is the verl ``uid`` prompt part when present, else a hash of the prompt ids (several samples of a prompt share
it). The rows are then scored by :func:`drift.collect.pipeline.score` exactly like ``drift score``: the token rows
cover the response ids (the completion's tokens plus the appended end token), each labelled with its own step.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drift.collect.prompts import iter_jsonl, parse_prompt_value, raise_input_problems
from drift.errors import InputFormatError, TokenizerWarning
from drift.ingest.config import ImportConfig
from drift.ingest.run import default_step

__all__ = ["TEMPLATE_RULES", "TemplateRestorer", "TextRecord", "find_files", "import_completions",
           "rows_from_records"]

#: How a prompt became token ids (see the module docstring).
TEMPLATE_RULES: dict[str, str] = {
    "messages": "chat messages rendered with the tokenizer's chat template",
    "restored": "text without special tokens matched to the chat template's stripped rendering; the messages "
                "found were re-rendered and their ids decode to exactly the dumped text",
    "as_is": "text that still carries the template, tokenized as is (no special tokens added)",
    "user_turn": "plain text wrapped as one user turn of the chat template",
    "raw": "plain text tokenized with the tokenizer's special tokens (BOS), no chat template",
}
_STRIPS = {"trl": True, "verl": True, "swift": False}  # decoded with skip_special_tokens=True
_SHAPES = (("user",), ("system", "user"), ("user", "assistant", "user"), ("system", "user", "assistant", "user"),
           ("user", "assistant", "user", "assistant", "user"),
           ("system", "user", "assistant", "user", "assistant", "user"))
_SWIFT_NOT_REWARD = {"step", "prompt", "completion", "advantages", "entropy", "solution", "num_turns", "image"}
_TRL_NOT_REWARD = {"step", "prompt", "completion", "advantage"}
_MARK = "\x00{}\x00"


@dataclass(frozen=True)
class TextRecord:
    """One dumped sample: where it is, its step, the prompt (text or messages) and the completion text."""

    where: str
    step: int
    prompt: Any
    completion: str
    group: str | None = None
    reward: float | None = None
    answer: str | None = None


def _step_of_name(path: Path, default: int = -1) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else default


def find_files(path: Path, fmt: str) -> list[Path]:
    """The dump files under ``path`` (one file, the files' folder, or the trainer's ``output_dir``), in step order.

    Raises:
        InputFormatError: nothing of ``fmt`` is there, or several candidate folders / files are.
    """
    want = ".parquet" if fmt == "trl" else ".jsonl"
    layout = {"trl": "output_dir/completions/completions_{step:05d}.parquet",
              "verl": "rollout_data_dir/{step}.jsonl", "swift": "output_dir/completions.jsonl"}[fmt]
    if not path.exists():
        raise InputFormatError(f"{path} does not exist; give the {fmt} dump ({layout}), its folder or one file")
    if path.is_file():
        if path.suffix != want:
            raise InputFormatError(f"{path}: a {fmt} dump is a {want} file ({layout})")
        return [path]
    if fmt == "trl":
        folder = path / "completions" if (path / "completions").is_dir() else path
        files = sorted(folder.glob("completions_*.parquet")) or sorted(folder.glob("*.parquet"))
    elif fmt == "verl":
        def steps_in(d: Path) -> list[Path]:
            return [f for f in d.glob("*.jsonl") if f.stem.isdigit()]

        files = steps_in(path)
        if not files:
            subs = [d for d in sorted(path.iterdir()) if d.is_dir() and steps_in(d)]
            if len(subs) > 1:
                names = ", ".join(d.name for d in subs)
                raise InputFormatError(f"{path} holds several folders of verl step files ({names}; e.g. "
                                       "rollout_data_dir and validation_data_dir): pass one of them")
            files = steps_in(subs[0]) if subs else []
    else:
        direct = path / "completions.jsonl"
        found = [direct] if direct.is_file() else sorted({*path.glob("*/completions.jsonl"),
                                                          *path.glob("*/*/completions.jsonl")})
        if len(found) > 1:
            raise InputFormatError(f"{path} holds several completions.jsonl files ({', '.join(map(str, found))}); "
                                   "pass the one to import")
        files = found
    if not files:
        raise InputFormatError(f"{path}: no {fmt} files found (expected {layout})")
    return sorted(files, key=lambda f: (_step_of_name(f), f.name))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def _reward(row: dict[str, Any], keys: Sequence[str]) -> float | None:
    vals = [v for v in (_num(row.get(k)) for k in keys) if v is not None]
    return float(sum(vals)) if vals else None


def _answer(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


def _step(value: Any, where: str, fallback: int | None, problems: list[str]) -> int | None:
    if value is None:
        return fallback
    try:
        step = int(value)
    except (TypeError, ValueError):
        step = -1
    if step < 0 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        problems.append(f"{where} 'step': must be a non-negative integer, got {value!r}")
        return None
    return step


def _record(row: dict[str, Any], where: str, step: int | None, problems: list[str], **kw: Any) -> TextRecord | None:
    n0 = len(problems)
    prompt = parse_prompt_value(row.get("prompt"), f"{where} 'prompt'", problems)
    if not isinstance(row.get("completion"), str):
        problems.append(f"{where} 'completion': must be a string, got {type(row.get('completion')).__name__}")
    if step is None or len(problems) > n0:
        return None
    return TextRecord(where, step, prompt, row["completion"], **kw)


class _Repeats:
    """Rows a never-cleared buffer logs again: a row (step aside) also in the previous file / line is a repeat.

    Counted as a multiset, so a completion sampled twice for one prompt stays two samples.
    """

    def __init__(self) -> None:
        self.prev: Counter[str] = Counter()
        self.cur: Counter[str] = Counter()
        self.n = 0

    def seen(self, row: dict[str, Any]) -> bool:
        key = json.dumps({k: "NaN" if isinstance(v, float) and math.isnan(v) else v
                          for k, v in sorted(row.items()) if k != "step"}, default=str)
        self.cur[key] += 1
        if self.prev[key] > 0:
            self.prev[key] -= 1
            self.n += 1
            return True
        return False

    def next(self) -> None:
        self.prev, self.cur = self.cur, Counter()


def _read_trl(files: Sequence[Path], step0: int) -> tuple[list[TextRecord], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out: list[TextRecord] = []
    repeats = _Repeats()
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as exc:
            raise InputFormatError(f"{f}: not a readable parquet file ({exc})") from None
        missing = [c for c in ("prompt", "completion") if c not in table.column_names]
        if missing:
            raise InputFormatError(f"{f}: missing column(s) {missing}; a TRL completions file has step, prompt, "
                                   f"completion, <reward columns>, advantage (found {table.column_names})")
        types = {c: table.schema.field(c).type for c in table.column_names}
        rewards = [c for c, t in types.items() if c not in _TRL_NOT_REWARD and not c.startswith("__")
                   and (pa.types.is_floating(t) or pa.types.is_integer(t))]
        problems: list[str] = []
        for i, row in enumerate(table.to_pylist()):
            if repeats.seen(row):
                continue
            where = f"{f.name} row {i}"
            rec = _record(row, where, _step(row.get("step"), where, _step_of_name(f, step0), problems), problems,
                          reward=_reward(row, rewards))
            out += [rec] if rec else []
        raise_input_problems(f, problems)
        repeats.next()
    return out, repeats.n


def _verl_group(uid: Any) -> str | None:
    if not isinstance(uid, str) or not uid:
        return None
    parts = uid.rsplit("_", 2)  # v1 keys: {prompt uid}_{session}_{output index}
    return parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else uid


def _read_verl(files: Sequence[Path], step0: int) -> tuple[list[TextRecord], int]:
    out: list[TextRecord] = []
    for f in files:
        problems: list[str] = []
        for lineno, obj in iter_jsonl(f, problems):
            where = f"{f.name} line {lineno}"
            bad = [k for k in ("input", "output") if not isinstance(obj.get(k), str)]
            if bad:
                problems.append(f"{where}: missing or non-text {bad} (a verl dump line has input, output, gts, "
                                f"score, step; found keys {sorted(obj)})")
                continue
            rec = _record({"prompt": obj["input"], "completion": obj["output"]}, where,
                          _step(obj.get("step"), where, _step_of_name(f, step0), problems), problems,
                          group=_verl_group(obj.get("uid")), reward=_num(obj.get("score")),
                          answer=_answer(obj.get("gts")))
            out += [rec] if rec else []
        raise_input_problems(f, problems)
    return out, 0


def _read_swift(files: Sequence[Path], step0: int) -> tuple[list[TextRecord], int]:
    out: list[TextRecord] = []
    repeats = _Repeats()
    for f in files:
        problems: list[str] = []
        for lineno, obj in iter_jsonl(f, problems):
            where = f"{f.name} line {lineno}"
            cols = {k: v for k, v in obj.items() if isinstance(v, list)}
            n = len(cols.get("prompt", ()))
            bad = [k for k, v in cols.items() if len(v) != n]
            if "prompt" not in cols or "completion" not in cols or bad:
                problems.append(f"{where}: needs equal-length lists 'prompt', 'completion', ... (one entry per "
                                f"sample); " + (f"lists {bad} do not have the {n} entries of 'prompt'" if bad
                                                else f"found keys {sorted(obj)}"))
                continue
            rewards = [k for k, v in cols.items() if k not in _SWIFT_NOT_REWARD
                       and all(x is None or isinstance(x, float) or _num(x) is not None for x in v)]
            for j in range(n):
                row = {k: v[j] for k, v in cols.items()}
                if "advantages" in cols and repeats.seen(row):  # GRPO never clears its deques; GKD does
                    continue
                at = f"{where} entry {j}"
                rec = _record(row, at, _step(row.get("step"), at, step0, problems), problems,
                              reward=_reward(row, rewards), answer=_answer(row.get("solution")))
                out += [rec] if rec else []
            repeats.next()
        raise_input_problems(f, problems)
    return out, repeats.n


_READERS: dict[str, Callable[[Sequence[Path], int], tuple[list[TextRecord], int]]] = {
    "trl": _read_trl, "verl": _read_verl, "swift": _read_swift}


class TemplateRestorer:
    """Turns dumped prompt text back into the token ids the trainer fed (rules in the module docstring)."""

    def __init__(self, tokenizer: Any, fmt: str, chat: str) -> None:
        self.tok, self.fmt, self.chat, self.strips = tokenizer, fmt, chat, _STRIPS[fmt]
        self.templated = bool(getattr(tokenizer, "chat_template", None)) and chat != "never"
        self.specials = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])} | {
            t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
        self.counts: Counter[str] = Counter()
        self.roundtrip: dict[str, Any] = {"checked": 0, "ok": 0, "failed": []}
        self._cache: dict[str, tuple[Any, str, list[int], str]] = {}
        self.shapes: list[tuple[tuple[str, ...], list[re.Pattern[str]]]] = []
        self.heads: set[str] = set()  # each shape's stripped opening, whitespace removed
        self.markers: set[str] = set()  # the stripped text between turns: no restored content may hold one
        for roles in _SHAPES if self.templated and self.strips else ():
            parts = re.split("\x00(\\d+)\x00", self._render(roles) or "")
            if [int(x) for x in parts[1::2]] != list(range(len(roles))):
                continue  # the template refuses or rewrites this shape
            frags = [self._strip(f) for f in parts[0::2]]
            flex = [r"\s*" + r"\s*".join(map(re.escape, f.split())) + r"\s*" for f in frags]
            self.shapes.append((roles, [re.compile(x, re.DOTALL) for x in ("(.+?)".join(map(re.escape, frags)),
                                                                           "(.+?)".join(flex))]))
            self.heads.add("".join(frags[0].split()))
            self.markers |= {f for f in frags if f.strip()}
        gen = self._render(("user",)) if self.templated else None
        self.gen_suffix = "".join(self._strip(gen.split(_MARK.format(0))[-1]).split()) if gen else ""
        self.eos_id = tokenizer.eos_token_id
        self.turn_end = self.eos_id  # the token after an assistant turn's content, when it is a special token
        turn = self._render(("user", "assistant"), gen=False) if self.templated else None
        tail = self._ids(turn.split(_MARK.format(1))[-1], False) if turn and _MARK.format(1) in turn else []
        if tail and int(tail[0]) in set(getattr(tokenizer, "all_special_ids", [])):
            self.turn_end = int(tail[0])

    def _render(self, roles: Sequence[str], gen: bool = True) -> str | None:
        msgs = [{"role": r, "content": _MARK.format(i)} for i, r in enumerate(roles)]
        try:
            return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        except Exception:  # a template may refuse a shape (e.g. a system turn)
            return None

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def _strip(self, text: str) -> str:
        return self.tok.decode(self._ids(text, False), skip_special_tokens=True) if self.strips else text

    def _restore(self, text: str) -> tuple[tuple[dict[str, str], ...], str, list[int]] | None:
        """The most-turns messages whose rendering decodes (special tokens skipped) to exactly ``text``."""
        from drift.runtime.prompts import render_prompt

        best = None
        for roles, pats in self.shapes:
            for m in filter(None, (pat.fullmatch(text) for pat in pats)):
                if any(mark in c for c in m.groups() for mark in self.markers):
                    continue  # a turn boundary inside a content: the text has more turns than this shape
                msgs = tuple({"role": r, "content": c} for r, c in zip(roles, m.groups(), strict=True))
                rendered, ids = render_prompt(self.tok, msgs, chat="auto")
                if self.tok.decode(ids, skip_special_tokens=True) == text:
                    best = (msgs, rendered, ids) if best is None or len(msgs) > len(best[0]) else best
                    break
        return best

    def _carries_template(self, text: str) -> bool:
        flat = "".join(text.split())
        return any(t in text for t in self.specials) or (bool(self.gen_suffix) and flat.endswith(self.gen_suffix)
                                                         and any(flat.startswith(h) for h in self.heads or {""}))

    def prompt(self, value: Any) -> tuple[Any, str, list[int], str]:
        """(source value, rendered text, ids, rule) of one dumped prompt.

        Raises:
            InputFormatError: chat messages with ``--chat-template never`` or without a template.
        """
        from drift.runtime.prompts import render_prompt

        key = value if isinstance(value, str) else json.dumps(list(value))
        if key not in self._cache:
            if not isinstance(value, str):
                out = (value, *render_prompt(self.tok, value, chat=self.chat), "messages")
            elif self.shapes and (found := self._restore(value)) is not None:
                out = (*found, "restored")
            elif self.templated and self._carries_template(value):
                out = (value, value, self._ids(value, False), "as_is")
            elif self.chat == "always" or (self.templated and self.fmt != "trl"):
                out = (value, *render_prompt(self.tok, value, chat="always"), "user_turn")
            else:
                out = (value, value, self._ids(value, True), "raw")
            if out[3] != "messages" and out[3] != "user_turn":  # the ids must decode back to the dumped text
                self.roundtrip["checked"] += 1
                if value in (self.tok.decode(out[2], skip_special_tokens=skip) for skip in {self.strips, True}):
                    self.roundtrip["ok"] += 1
                elif len(self.roundtrip["failed"]) < 3:
                    self.roundtrip["failed"].append(value[:120])
            self._cache[key] = out
        self.counts[self._cache[key][3]] += 1
        return self._cache[key]

    def completion(self, text: str, rule: str) -> tuple[list[int], bool]:
        """(response ids, finished): tokenized without special tokens, the stop token appended (module docstring)."""
        ids = self._ids(text, False)
        stop = self.eos_id if rule == "raw" else self.turn_end
        if ids and int(ids[-1]) in {self.eos_id, self.turn_end}:
            return ids, True
        return ([*ids, int(stop)], True) if stop is not None else (ids, False)

    def record(self) -> dict[str, Any]:
        """What ``config.json`` records under ``source.template``."""
        def name(i: int | None) -> str | None:
            return None if i is None else self.tok.convert_ids_to_tokens(int(i))

        return {"rules": {k: TEMPLATE_RULES[k] for k in self.counts}, "counts": dict(self.counts),
                "chat_template": self.chat, "tokenizer_has_template": bool(getattr(self.tok, "chat_template", None)),
                "dump_skips_special_tokens": self.strips, "prompt_roundtrip": dict(self.roundtrip),
                "completion_end": {"rule": "every completion counts as finished: the end-of-turn token (EOS for raw "
                                           "prompts) is appended unless the text already ends with a stop token",
                                   "turn_end": name(self.turn_end), "eos": name(self.eos_id)}}


def rows_from_records(records: Sequence[TextRecord], restorer: TemplateRestorer, run_id: str) -> list[dict[str, Any]]:
    """Rollout rows (as :func:`drift.collect.inputs.read_rollouts` makes them) with each record's own ``step``.

    Raises:
        InputFormatError: a prompt cannot be rendered (naming its file and row / line).
    """
    from drift.runtime.prompts import unknown_token_report

    rows: list[dict[str, Any]] = []
    per: Counter[tuple[int, str]] = Counter()
    problems: list[str] = []
    for rec in records:
        try:
            value, text, ids, rule = restorer.prompt(rec.prompt)
        except InputFormatError as exc:
            problems.append(f"{rec.where}: {exc}")
            continue
        resp, finished = restorer.completion(rec.completion, rule)
        pid = rec.group or hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]
        source = json.dumps(value if isinstance(value, str) else list(value))
        rows.append({"prompt_id": pid, "sample_id": per[(rec.step, pid)], "step": rec.step, "prompt": text,
                     "teacher_prompt": None, "student_prompt_ids": ids, "teacher_prompt_ids": ids,
                     "response_ids": resp, "response_text": restorer.tok.decode(resp, skip_special_tokens=False),
                     "response_len": len(resp), "finished": finished, "truncated": False, "reward": rec.reward,
                     "answer": rec.answer, "run_id": run_id, "user_prompt_id": rec.group, "source_prompt": source,
                     "_where": rec.where})
        per[(rec.step, pid)] += 1
    raise_input_problems("the completions dump", problems)
    unknown_token_report(restorer.tok, [(r.pop("_where"), r["response_ids"]) for r in rows], what="completions")
    return rows


def import_completions(cfg: ImportConfig) -> Any:
    """Read, re-tokenize and score the text dump ``cfg`` names; return the written :class:`~drift.store.DriftDataset`.

    The files are read and checked before any model is loaded.

    Raises:
        InputFormatError: no dump there, a malformed file (named with the row / line) or no samples.
    """
    from drift.collect.config import ScoreConfig
    from drift.collect.pipeline import score
    from drift.runtime.checks import preflight_out
    from drift.runtime.loading import load_pair

    fmt = str(cfg.format)
    root = Path(cfg.path)
    files = find_files(root, fmt)
    records, repeats = _READERS[fmt](files, default_step(cfg))
    if not records:
        raise InputFormatError(f"{root}: the {fmt} files hold no completions")
    preflight_out(cfg.out, cfg.if_exists)
    mp = load_pair(cfg.student or "", cfg.teacher or "", tokenizer=cfg.tokenizer, device=cfg.scoring.device,
                   dtype=cfg.scoring.dtype, num_threads=cfg.scoring.num_threads, **cfg.scoring.placement())
    run_id = cfg.run_id or Path(cfg.out).name
    restorer = TemplateRestorer(mp.tokenizer, fmt, cfg.chat_template)
    rows = rows_from_records(records, restorer, run_id)
    template = restorer.record()
    rt = template["prompt_roundtrip"]
    if rt["ok"] < rt["checked"] or (template["counts"].get("as_is") and restorer.strips):
        warnings.warn(f"{root}: {rt['checked'] - rt['ok']} of {rt['checked']} prompts do not decode back to the "
                      f"dumped text, and {template['counts'].get('as_is', 0)} kept the template without its special "
                      f"tokens (no chat-template parse reproduced them), e.g. {rt['failed'][:1]}: their ids may differ "
                      "from what the trainer fed. Check --tokenizer and --chat-template.", TokenizerWarning,
                      stacklevel=2)
    source = {"format": fmt, "path": str(root), "files": [str(f.relative_to(root)) if root.is_dir() else f.name
                                                          for f in files],
              "support": "full", "has_teacher": True, "teacher_source": "hf_forward", "missing_analyses": [],
              "records": len(records) + repeats, "repeats_dropped": repeats, "rollouts": len(rows),
              "tokenizer": mp.tokenizer_source, "template": template,
              "notes": {"step": "each row's own: trl the first file that logs it, verl the line's, swift the entry's",
                        "prompt_key": "the verl uid's prompt part when present, else a hash of the prompt ids",
                        "reward": {"trl": "sum of the numeric reward columns (TRL's default reward_weights of 1)",
                                   "verl": "score", "swift": "sum of the reward lists"}[fmt],
                        "truncated": "not recorded by the trainer: every completion is imported as finished"}}
    score_cfg = ScoreConfig(rollouts=str(root), out=cfg.out, student=cfg.student or "", teacher=cfg.teacher or "",
                            tokenizer=cfg.tokenizer, step=default_step(cfg), run_id=cfg.run_id,
                            chat_template=cfg.chat_template, part_size=cfg.part_size, if_exists=cfg.if_exists,
                            scoring=cfg.scoring)
    return score(mp.student, mp.teacher, mp.tokenizer, rows, score_cfg, teacher_tokenizer=mp.teacher_tokenizer,
                 own_tokenizers=mp.own_tokenizers if cfg.tokenizer else None, recorded=("import", cfg),
                 source=source, row_steps=True)
