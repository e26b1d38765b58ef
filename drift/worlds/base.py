"""What every oracle world shares: the :class:`World` protocol the pipeline uses, and the helpers behind it.

A world is a frozen dataclass describing a synthetic task with ground truth. The pipeline (collection,
training, the verifiers, :mod:`drift.worlds.sft`) only uses the members of :class:`World`; everything that
does not depend on the task itself lives here as plain functions, so that each world module only says how its
prompts and correct responses look:

- the word-level tokenizer (:func:`word_level_tokenizer`) and the special-token ids (:func:`special_ids`),
- the slot-based oracle, the error-free-prefix flags, the first error and the exact-match verifier, all
  derived from the correct response ids (:func:`oracle_tokens`, :func:`oracle_prefix_ok`,
  :func:`first_error`, :func:`verify`),
- distinct prompt rows (:func:`draw_prompt_records`), and persistence (:func:`world_from_dict`,
  :func:`save_world`, :func:`read_world_file`).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

import numpy as np

from drift.config import config_to_dict
from drift.errors import DatasetError, InputFormatError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "SPECIAL_TOKENS",
    "WORLD_FILE",
    "IdsLike",
    "SFTExample",
    "SFTSampler",
    "World",
    "as_id_list",
    "cached",
    "draw_prompt_records",
    "first_error",
    "oracle_prefix_ok",
    "oracle_tokens",
    "read_world_file",
    "save_world",
    "special_ids",
    "strip_trailing_pad",
    "token_ids",
    "verify",
    "word_level_tokenizer",
    "world_from_dict",
    "world_to_dict",
]

WORLD_FILE = "world.json"
"""File name of a saved world inside its folder."""

SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "sep_token": "<sep>",
    "eos_token": "<eos>",
    "unk_token": "<unk>",
}
"""Special tokens of every world tokenizer, in vocabulary order (ids 0..4)."""

IdsLike = Sequence[int] | np.ndarray


class SFTExample(NamedTuple):
    """One supervised training sequence: prompt ids, response ids and which response tokens carry loss."""

    prompt: list[int]
    response: list[int]
    loss_mask: list[bool] | None = None
    """Per response token, whether it is a training target (None: all are)."""


class SFTSampler(Protocol):
    """Draws a world's supervised training data (ids, not text): made by :meth:`World.sft_sampler`."""

    def sample(self, rng: np.random.Generator, count: int, lo: int, hi: int) -> list[SFTExample]:
        """``count`` training examples with ``lo..hi`` input symbols each (uniform)."""
        ...

    def selection(self, rng: np.random.Generator, count: int) -> list[SFTExample]:
        """``count`` correct, full-loss examples of the world's own length range (the evaluation set)."""
        ...


W = TypeVar("W", bound="World")


@runtime_checkable
class World(Protocol):
    """What drift's pipeline uses from an oracle world (:class:`~drift.worlds.TranslateCopyWorld`, ...).

    ``response_ids`` below are a model's response after the prompt (EOS included when it stopped), and
    ``prompt_ids`` the tokenized prompt (``<bos> .. <sep>``, pads ignored).
    """

    name: ClassVar[str]
    min_len: int
    max_len: int

    @property
    def max_response_len(self) -> int:
        """Most tokens of a correct response, EOS included."""
        ...

    @property
    def max_sequence_len(self) -> int:
        """Most tokens of a prompt (with ``<bos>``) plus its correct response."""
        ...

    def build_tokenizer(self) -> PreTrainedTokenizerFast:
        """The world's Hugging Face tokenizer (``add_special_tokens=True`` prepends ``<bos>``)."""
        ...

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        """Ids of ``bos``, ``sep``, ``eos`` and ``pad``."""
        ...

    def make_prompt_records(self, rng: np.random.Generator, count: int, id_prefix: str, *,
                            exclude: Collection[str] = ()) -> list[dict[str, str]]:
        """``count`` distinct prompt rows ``{"id", "prompt", "answer", "task"}``."""
        ...

    def parse_prompt_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> Any:
        """The task instance a tokenized prompt describes (raises ``InputFormatError`` on foreign tokens)."""
        ...

    def correct_response_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> list[int]:
        """Token ids of the correct response, ending with EOS."""
        ...

    def slot_groups(self, prompt_ids: IdsLike, tokenizer: Any) -> dict[str, np.ndarray]:
        """Named boolean masks over the correct response's slots (e.g. ``{"key": ..}``), for evaluations."""
        ...

    def oracle_tokens(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """The correct token id at each response slot (``-1`` after the correct EOS)."""
        ...

    def oracle_prefix_ok(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """Whether the response prefix before each slot is error-free."""
        ...

    def first_error(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> int | None:
        """Slot of the first wrong token; None for an exactly correct response."""
        ...

    def verify(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> float:
        """Exact-match verifier: 1.0 iff the response is the correct one (trailing pads ignored)."""
        ...

    def sft_sampler(self, tokenizer: Any, data: Any = None) -> SFTSampler:
        """The supervised-training data generator (``data``: the world's own training-data options)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description ``{"name": ..., <fields>}``."""
        ...

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the world to ``path/world.json`` (or ``path`` if it ends in ``.json``)."""
        ...


# --------------------------------------------------------------------------------------------- helpers
def as_id_list(ids: Any) -> list[int]:
    """Plain list of ints from a list, numpy array or (CPU) torch tensor of token ids."""
    return [int(i) for i in np.asarray(ids).reshape(-1).tolist()]


_IDS: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
"""Per tokenizer, per (world, what): ids looked up once (a verifier calls them per row)."""


def cached(tokenizer: Any, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, computed once per ``(tokenizer, key)`` (``key`` must be hashable, e.g. ``(world, "x")``)."""
    try:
        per = _IDS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        return make()
    if key not in per:
        per[key] = make()
    return per[key]


def word_level_tokenizer(vocab: dict[str, int], model_max_length: int) -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer over ``vocab`` (word-level, whitespace-split, no chat template).

    ``add_special_tokens=True`` (the default) prepends ``<bos>``; no EOS is appended. Decoding joins tokens
    with single spaces, so ``decode(encode(text, add_special_tokens=False)) == text`` for any world text.
    ``vocab`` must hold :data:`SPECIAL_TOKENS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word-level tokens with " "
    bos = SPECIAL_TOKENS["bos_token"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=core, clean_up_tokenization_spaces=False,
                                   model_max_length=model_max_length, **SPECIAL_TOKENS)


def special_ids(world: Any, tokenizer: Any) -> dict[str, int]:
    """Ids of ``bos``, ``sep``, ``eos`` and ``pad`` in ``tokenizer`` (cached per world and tokenizer).

    Raises:
        InputFormatError: if the tokenizer lacks one of them.
    """
    def make() -> dict[str, int]:
        out: dict[str, int] = {}
        for key in ("bos", "sep", "eos", "pad"):
            tid = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[f"{key}_token"])
            if tid is None or tid == tokenizer.unk_token_id:
                raise InputFormatError(f"tokenizer has no {SPECIAL_TOKENS[f'{key}_token']} token; build it "
                                       f"with {type(world).__name__}.build_tokenizer()")
            out[key] = int(tid)
        return out

    return dict(cached(tokenizer, (world, "special"), make))


def token_ids(world: Any, tokenizer: Any, what: str, tokens: Sequence[str]) -> np.ndarray:
    """int64 ids of ``tokens`` (cached per world, tokenizer and ``what``).

    Raises:
        InputFormatError: if the tokenizer does not know one of them.
    """
    def make() -> np.ndarray:
        raw = tokenizer.convert_tokens_to_ids(list(tokens))
        if any(i is None or i == tokenizer.unk_token_id for i in raw):
            raise InputFormatError(f"tokenizer does not cover this {world.name} world's {what} tokens; build "
                                   f"it with {type(world).__name__}.build_tokenizer()")
        return np.asarray(raw, dtype=np.int64)

    return cached(tokenizer, (world, what), make).copy()


def strip_trailing_pad(response_ids: IdsLike, pad: int) -> list[int]:
    """The response without trailing ``pad`` ids (batched, right-padded generation leaves them)."""
    response = as_id_list(response_ids)
    while response and response[-1] == pad:
        response.pop()
    return response


def oracle_tokens(correct: Sequence[int], length: int) -> np.ndarray:
    """Slot-based oracle of a response of ``length`` tokens: ``correct[t]`` for ``t < len(correct)``, else -1.

    Returns:
        int64 array ``oracle_T`` of length ``length``.
    """
    oracle_T = np.full(length, -1, dtype=np.int64)
    k = min(length, len(correct))
    oracle_T[:k] = list(correct[:k])
    return oracle_T


def oracle_prefix_ok(correct: Sequence[int], response_ids: IdsLike) -> np.ndarray:
    """``ok[t] = all(response[k] == oracle[k] for k < t)`` (exclusive: slot 0 is always True).

    Returns:
        bool array of length ``len(response_ids)``.
    """
    response_T = np.asarray(as_id_list(response_ids), dtype=np.int64)
    match_T = response_T == oracle_tokens(correct, len(response_T))
    ok_T = np.ones(len(response_T), dtype=bool)
    if len(response_T) > 1:
        ok_T[1:] = np.cumprod(match_T[:-1]).astype(bool)
    return ok_T


def first_error(correct: Sequence[int], response_ids: IdsLike, pad: int) -> int | None:
    """Slot of the first response token that differs from ``correct``; None for an exact match.

    A response that stops before its EOS slot has its first error at ``len(response)`` (the missing token);
    trailing ``pad`` ids are ignored.
    """
    response = strip_trailing_pad(response_ids, pad)
    for t, (got, want) in enumerate(zip(response, correct, strict=False)):
        if got != want:
            return t
    if len(response) == len(correct):
        return None
    return min(len(response), len(correct))


def verify(correct: Sequence[int], response_ids: IdsLike, pad: int) -> float:
    """1.0 iff the response (trailing ``pad`` ids ignored) equals ``correct``, else 0.0."""
    return float(strip_trailing_pad(response_ids, pad) == list(correct))


def draw_prompt_records(draw: Callable[[], tuple[str, str]], count: int, id_prefix: str, task: str, *,
                        exclude: Collection[str] = ()) -> list[dict[str, str]]:
    """``count`` distinct rows ``{"id", "prompt", "answer", "task"}`` from ``draw() -> (prompt, answer)``.

    A drawn prompt that is in ``exclude`` or already drawn is redrawn.

    Raises:
        ValueError: if ``count`` distinct prompts are not found in ``1000 * count + 1000`` draws.
    """
    seen = set(exclude)
    rows: list[dict[str, str]] = []
    tries = 1000 * count + 1000
    for _ in range(tries):
        if len(rows) == count:
            break
        prompt, answer = draw()
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"id": f"{id_prefix}-{len(rows):05d}", "prompt": prompt, "answer": answer, "task": task})
    else:
        raise ValueError(f"could not draw {count} distinct prompts in {tries} tries; the world has too "
                         "few distinct prompts (raise max_len or the alphabet size)")
    return rows


# ------------------------------------------------------------------------------------------ persistence
def read_world_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a saved world (``path`` = a folder holding ``world.json``, or the file itself).

    Raises:
        DatasetError: if there is no world description at ``path``.
        InputFormatError: if the file is not valid JSON or not a JSON object.
    """
    source = Path(path)
    if source.is_dir():
        source = source / WORLD_FILE
    if not source.is_file():
        raise DatasetError(f"no world description at {source}; build the oracle world with `python -m "
                           "scripts.make_oracle_world --out DIR`, or pass the folder holding world.json")
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise InputFormatError(f"{source} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    if not isinstance(data, dict):
        raise InputFormatError(f"{source} must hold a JSON object describing a world")
    return data


def world_to_dict(world: Any) -> dict[str, Any]:
    """Plain-JSON description ``{"name": <world name>, <fields>}`` of a world dataclass."""
    return {"name": world.name, **config_to_dict(world)}


def world_from_dict(cls: type[W], data: dict[str, Any]) -> W:
    """Inverse of :func:`world_to_dict` for world class ``cls``.

    Raises:
        InputFormatError: if ``data`` names another world or holds unknown keys.
        ConfigError: if the values are invalid.
    """
    if not isinstance(data, dict):
        raise InputFormatError(f"a world description must be a JSON object, got {type(data).__name__}")
    name = data.get("name", cls.name)
    if name != cls.name:
        raise InputFormatError(f"world name is {name!r}, expected {cls.name!r}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known - {"name"})
    if unknown:
        raise InputFormatError(f"unknown keys in world description: {unknown}; known: {sorted(known)}")
    return cls(**{k: v for k, v in data.items() if k in known})


def save_world(world: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``world`` as JSON to ``path/world.json``, or to ``path`` itself if it ends in ``.json``."""
    target = Path(path)
    if target.suffix != ".json":
        target = target / WORLD_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(world.to_dict(), indent=2) + "\n")
    return target
