"""The translate-copy world: a synthetic task with exact per-token oracles, for offline drift experiments.

Task. The prompt is ``<bos>``, ``n`` *distinct* input symbols ``x_1 .. x_n`` (tokens ``i00 .. i63``) and
``<sep>``. The correct response is ``f(x_1) .. f(x_n) <eos>`` written in a separate output alphabet
(``o00 .. o63``), with the bijection ``f(x) = (mult * x + offset) mod n_symbols`` (default
``7x + 3 mod 64``)::

    prompt   <bos> i05 i33 i12 <sep>
    response o38 o42 o23 <eos>

Why errors cascade. A small transformer does not count positions; it solves the task by locating the source of
its *last output* in the prompt (inverting ``f`` on its own previous token) and translating the symbol that
follows it. Every response token is therefore a step that depends on the previous one. One wrong token makes
the model continue from the wrong place in the prompt, so all later tokens are wrong *relative to the
slot-based oracle* (the answer ``f(x_t)`` at response slot ``t``), even though each later step may be a
faithful continuation of the error. A teacher scoring such a prefix keeps following the error, and its
supervision stops agreeing with the oracle after the first mistake: exactly the position-dependent drift that
drift measures.

Ground truth. :meth:`TranslateCopyWorld.oracle_tokens` gives the correct token at every response slot,
:meth:`TranslateCopyWorld.oracle_prefix_ok` says whether the prefix before a slot is still error-free, and
:meth:`TranslateCopyWorld.verify` is the exact-match verifier.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from drift.config import Checks, config_to_dict, opt
from drift.errors import DatasetError, InputFormatError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "WORLD_FILE", "TranslateCopyWorld", "read_world_file"]

WORLD_FILE = "world.json"
"""File name of a saved world inside its folder."""

SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "sep_token": "<sep>",
    "eos_token": "<eos>",
    "unk_token": "<unk>",
}
"""Special tokens of the world tokenizer, in vocabulary order (ids 0..4)."""

IdsLike = Sequence[int] | np.ndarray


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


def _as_id_list(ids: Any) -> list[int]:
    """Plain list of ints from a list, numpy array or (CPU) torch tensor of token ids."""
    return [int(i) for i in np.asarray(ids).reshape(-1).tolist()]


_IDS: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
"""Per tokenizer, per (world, what): the special and alphabet ids, looked up once (a verifier calls them per row)."""


def _cached(tokenizer: Any, key: Any, make: Any) -> Any:
    try:
        per = _IDS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        return make()
    if key not in per:
        per[key] = make()
    return per[key]


@dataclass(frozen=True)
class TranslateCopyWorld:
    """Translate-copy task: map ``n`` distinct input symbols through the bijection ``f`` in order, then stop.

    Example:
        >>> w = TranslateCopyWorld()
        >>> w.prompt_text([5, 33]), w.answer_text([5, 33])
        ('i05 i33 <sep>', 'o38 o42')
    """

    n_symbols: int = opt(64, "size of the input alphabet (and of the output alphabet)")
    mult: int = opt(7, "multiplier of f(x) = (mult*x + offset) mod n_symbols; must be coprime to n_symbols")
    offset: int = opt(3, "offset of f(x) = (mult*x + offset) mod n_symbols")
    min_len: int = opt(30, "fewest input symbols in a prompt")
    max_len: int = opt(48, "most input symbols in a prompt (at most n_symbols: symbols are distinct)")

    name: ClassVar[str] = "translate_copy"

    def __post_init__(self) -> None:
        c = Checks("TranslateCopyWorld")
        for key in ("n_symbols", "mult", "offset", "min_len", "max_len"):
            value = getattr(self, key)
            c.check(isinstance(value, int) and not isinstance(value, bool),
                    f"{key} must be an int, got {value!r}")
        if c.problems:
            c.raise_if_any()
        c.in_range("n_symbols", self.n_symbols, 2, 1000)
        c.check(math.gcd(self.mult, self.n_symbols) == 1,
                f"mult={self.mult} must be coprime to n_symbols={self.n_symbols} so that f is a bijection; "
                "pick an odd mult for a power-of-two alphabet")
        c.in_range("offset", self.offset, 0, self.n_symbols - 1)
        c.positive("min_len", self.min_len)
        c.check(self.max_len >= self.min_len, f"max_len={self.max_len} must be >= min_len={self.min_len}")
        c.check(self.max_len <= self.n_symbols,
                f"max_len={self.max_len} must be <= n_symbols={self.n_symbols} (prompt symbols are distinct)")
        c.raise_if_any()

    # ----------------------------------------------------------------------------------------------- the map
    def f(self, x: int) -> int:
        """The translation ``f(x) = (mult * x + offset) mod n_symbols``."""
        return (self.mult * int(x) + self.offset) % self.n_symbols

    def f_inverse(self, y: int) -> int:
        """The inverse of :meth:`f`: the input symbol ``x`` with ``f(x) == y``."""
        return (pow(self.mult, -1, self.n_symbols) * (int(y) - self.offset)) % self.n_symbols

    @property
    def _width(self) -> int:
        return max(2, len(str(self.n_symbols - 1)))

    def input_token(self, x: int) -> str:
        """Token string of input symbol ``x`` (``i05``)."""
        return f"i{int(x):0{self._width}d}"

    def output_token(self, y: int) -> str:
        """Token string of output symbol ``y`` (``o38``)."""
        return f"o{int(y):0{self._width}d}"

    def vocab(self) -> dict[str, int]:
        """Token -> id: the special tokens, then ``i00..``, then ``o00..``."""
        tokens = [*SPECIAL_TOKENS.values()]
        tokens += [self.input_token(x) for x in range(self.n_symbols)]
        tokens += [self.output_token(y) for y in range(self.n_symbols)]
        return {tok: i for i, tok in enumerate(tokens)}

    # ------------------------------------------------------------------------------------------- tokenizer
    def build_tokenizer(self) -> PreTrainedTokenizerFast:
        """A Hugging Face fast tokenizer for this world (word-level, whitespace-split, no chat template).

        ``add_special_tokens=True`` (the default) prepends ``<bos>``; no EOS is appended. Decoding joins
        tokens with single spaces, so ``decode(encode(text, add_special_tokens=False)) == text`` for any world
        text.

        Returns:
            A ``transformers.PreTrainedTokenizerFast`` with bos/eos/pad/unk/sep set (right padding; callers
            may set ``padding_side``).
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        vocab = self.vocab()
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word-level tokens with " "
        bos = SPECIAL_TOKENS["bos_token"]
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, vocab[bos])])
        tok = PreTrainedTokenizerFast(tokenizer_object=core, clean_up_tokenization_spaces=False,
                                      model_max_length=2 * self.max_len + 3, **SPECIAL_TOKENS)
        return tok

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        """Ids of ``bos``, ``sep``, ``eos`` and ``pad`` in ``tokenizer`` (raises if one is missing)."""
        return dict(_cached(tokenizer, (self, "special"), lambda: self._special_ids(tokenizer)))

    def _special_ids(self, tokenizer: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in ("bos", "sep", "eos", "pad"):
            tid = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[f"{key}_token"])
            if tid is None or tid == tokenizer.unk_token_id:
                raise InputFormatError(f"tokenizer has no {SPECIAL_TOKENS[f'{key}_token']} token; build it "
                                       "with TranslateCopyWorld.build_tokenizer()")
            out[key] = int(tid)
        return out

    def symbol_ids(self, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the input and output alphabets: ``(in_ids[x], out_ids[y])``, each n_symbols long."""
        in_ids, out_ids = _cached(tokenizer, (self, "symbols"), lambda: self._symbol_ids(tokenizer))
        return in_ids.copy(), out_ids.copy()

    def _symbol_ids(self, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
        symbols = range(self.n_symbols)
        in_ids = np.asarray(tokenizer.convert_tokens_to_ids([self.input_token(x) for x in symbols]))
        out_ids = np.asarray(tokenizer.convert_tokens_to_ids([self.output_token(y) for y in symbols]))
        if np.any(in_ids == tokenizer.unk_token_id) or np.any(out_ids == tokenizer.unk_token_id):
            raise InputFormatError("tokenizer does not cover this world's alphabet (n_symbols="
                                   f"{self.n_symbols}); build it with TranslateCopyWorld.build_tokenizer()")
        return in_ids.astype(np.int64), out_ids.astype(np.int64)

    # -------------------------------------------------------------------------------------------- examples
    def sample_symbols(self, rng: np.random.Generator, n: int | None = None) -> list[int]:
        """``n`` distinct input symbols, uniformly drawn (``n`` uniform in ``[min_len, max_len]`` if None)."""
        if n is None:
            n = int(rng.integers(self.min_len, self.max_len + 1))
        if not 1 <= n <= self.n_symbols:
            raise ValueError(f"n must be in [1, {self.n_symbols}] (symbols are distinct), got {n}")
        return [int(x) for x in rng.choice(self.n_symbols, size=n, replace=False)]

    def prompt_text(self, symbols: Sequence[int]) -> str:
        """Prompt text ``"i05 i33 ... <sep>"`` (the tokenizer adds ``<bos>``)."""
        return " ".join([*(self.input_token(x) for x in symbols), SPECIAL_TOKENS["sep_token"]])

    def answer_text(self, symbols: Sequence[int]) -> str:
        """The correct response text without the EOS, e.g. ``"o38 o42"``."""
        return " ".join(self.output_token(self.f(x)) for x in symbols)

    def make_prompt_records(self, rng: np.random.Generator, count: int, id_prefix: str, *,
                            exclude: Collection[str] = ()) -> list[dict[str, str]]:
        """``count`` distinct prompt rows ``{"id", "prompt", "answer", "task"}`` (ids ``{id_prefix}-00000``).

        Args:
            rng: the random stream (the rows are a deterministic function of its state).
            count: number of rows.
            id_prefix: prefix of the row ids (``"train"`` gives ``train-00000``, ...).
            exclude: prompt texts that must not appear (e.g. the training prompts, to keep a held-out set
                disjoint); a sampled prompt that is excluded or already drawn is redrawn.
        """
        seen = set(exclude)
        rows: list[dict[str, str]] = []
        tries = 1000 * count + 1000
        for _ in range(tries):
            if len(rows) == count:
                break
            symbols = self.sample_symbols(rng)
            prompt = self.prompt_text(symbols)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append({"id": f"{id_prefix}-{len(rows):05d}", "prompt": prompt,
                         "answer": self.answer_text(symbols), "task": self.name})
        else:
            raise ValueError(f"could not draw {count} distinct prompts in {tries} tries; the world has too "
                             "few distinct prompts (raise max_len or n_symbols)")
        return rows

    # -------------------------------------------------------------------------------------------- oracles
    def parse_prompt_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> list[int]:
        """Input symbols of a tokenized prompt, in order, ignoring ``<bos>``, ``<sep>`` and ``<pad>``.

        Raises:
            InputFormatError: if the prompt holds any other token (an output symbol, ``<eos>``, ``<unk>``).
        """
        sp = self.special_ids(tokenizer)
        skip = {sp["bos"], sp["sep"], sp["pad"]}
        ids = [i for i in _as_id_list(prompt_ids) if i not in skip]
        symbols = []
        prefix, width = "i", self._width
        for tok in tokenizer.convert_ids_to_tokens(ids):
            if not (isinstance(tok, str) and len(tok) == width + 1 and tok.startswith(prefix)
                    and tok[1:].isdigit() and int(tok[1:]) < self.n_symbols):
                raise InputFormatError(f"prompt holds {tok!r}, which is not an input symbol of the "
                                       f"{self.name} world; prompts are '<bos> i.. i.. <sep>'")
            symbols.append(int(tok[1:]))
        return symbols

    def correct_response_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> list[int]:
        """Token ids of the correct response for a tokenized prompt, ending with EOS."""
        _, out_ids = self.symbol_ids(tokenizer)
        symbols = self.parse_prompt_ids(prompt_ids, tokenizer)
        return [int(out_ids[self.f(x)]) for x in symbols] + [self.special_ids(tokenizer)["eos"]]

    def oracle_tokens(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """Slot-based oracle: the correct token id at each response slot ``t``.

        ``oracle[t] = id(o_{f(x_t)})`` for ``t < n``, the EOS id at ``t == n`` and ``-1`` for ``t > n`` (no
        correct token exists after the EOS). The oracle ignores what the response holds, so after a first
        error it keeps naming the slot's answer, not the continuation of the error.

        Returns:
            int64 array of length ``len(response_ids)``.
        """
        T = len(_as_id_list(response_ids))
        correct = self.correct_response_ids(prompt_ids, tokenizer)
        oracle_T = np.full(T, -1, dtype=np.int64)
        k = min(T, len(correct))
        oracle_T[:k] = correct[:k]
        return oracle_T

    def oracle_prefix_ok(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """Whether the response prefix *before* slot ``t`` is error-free (exclusive: slot 0 is always True).

        ``ok[t] = all(response[k] == oracle[k] for k < t)``.

        Returns:
            bool array of length ``len(response_ids)``.
        """
        response_T = np.asarray(_as_id_list(response_ids), dtype=np.int64)
        match_T = response_T == self.oracle_tokens(prompt_ids, response_T, tokenizer)
        ok_T = np.ones(len(response_T), dtype=bool)
        if len(response_T) > 1:
            ok_T[1:] = np.cumprod(match_T[:-1]).astype(bool)
        return ok_T

    def first_error(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> int | None:
        """Slot of the first response token that differs from the oracle; None for an exactly correct reply.

        A response that stops before its EOS slot has its first error at ``len(response_ids)`` (the missing
        token); trailing ``<pad>`` after a correct EOS is ignored.
        """
        response = self._strip_trailing_pad(response_ids, tokenizer)
        correct = self.correct_response_ids(prompt_ids, tokenizer)
        for t, (got, want) in enumerate(zip(response, correct, strict=False)):
            if got != want:
                return t
        if len(response) == len(correct):
            return None
        return min(len(response), len(correct))

    def verify(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> float:
        """Exact-match verifier: 1.0 iff the response is the correct answer ids followed by EOS, else 0.0.

        Trailing ``<pad>`` tokens after the response (from batched, right-padded generation) are ignored.
        """
        response = self._strip_trailing_pad(response_ids, tokenizer)
        return float(response == self.correct_response_ids(prompt_ids, tokenizer))

    def _strip_trailing_pad(self, response_ids: IdsLike, tokenizer: Any) -> list[int]:
        response = _as_id_list(response_ids)
        pad = self.special_ids(tokenizer)["pad"]
        while response and response[-1] == pad:
            response.pop()
        return response

    # ------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description ``{"name": "translate_copy", "n_symbols": ..., ...}``."""
        return {"name": self.name, **config_to_dict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranslateCopyWorld:
        """Inverse of :meth:`to_dict`.

        Raises:
            InputFormatError: if ``data`` names another world or holds unknown keys.
            ConfigError: if the values are invalid.
        """
        if not isinstance(data, dict):
            raise InputFormatError(f"a world description must be a JSON object, got {type(data).__name__}")
        name = data.get("name", cls.name)
        if name != cls.name:
            raise InputFormatError(f"world name is {name!r}, expected {cls.name!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"name"})
        if unknown:
            raise InputFormatError(f"unknown keys in world description: {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the world as JSON to ``path/world.json``, or to ``path`` itself if it ends in ``.json``."""
        target = Path(path)
        if target.suffix != ".json":
            target = target / WORLD_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TranslateCopyWorld:
        """Read a world saved by :meth:`save` (a folder holding ``world.json``, or the JSON file itself).

        Raises:
            DatasetError: if the file does not exist.
            InputFormatError: if it is not valid JSON or does not describe this world.
        """
        return cls.from_dict(read_world_file(path))
