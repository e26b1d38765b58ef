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

import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from drift.config import Checks, opt
from drift.errors import InputFormatError
from drift.worlds import base
from drift.worlds.base import SPECIAL_TOKENS, WORLD_FILE, IdsLike, SFTExample, read_world_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "WORLD_FILE", "TranslateCopyWorld", "read_world_file"]


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
        return base.word_level_tokenizer(self.vocab(), self.max_sequence_len)

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        """Ids of ``bos``, ``sep``, ``eos`` and ``pad`` in ``tokenizer`` (raises if one is missing)."""
        return base.special_ids(self, tokenizer)

    def symbol_ids(self, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the input and output alphabets: ``(in_ids[x], out_ids[y])``, each n_symbols long."""
        symbols = range(self.n_symbols)
        return (base.token_ids(self, tokenizer, "input", [self.input_token(x) for x in symbols]),
                base.token_ids(self, tokenizer, "output", [self.output_token(y) for y in symbols]))

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
        def draw() -> tuple[str, str]:
            symbols = self.sample_symbols(rng)
            return self.prompt_text(symbols), self.answer_text(symbols)

        return base.draw_prompt_records(draw, count, id_prefix, self.name, exclude=exclude)

    # -------------------------------------------------------------------------------------------- oracles
    def parse_prompt_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> list[int]:
        """Input symbols of a tokenized prompt, in order, ignoring ``<bos>``, ``<sep>`` and ``<pad>``.

        Raises:
            InputFormatError: if the prompt holds any other token (an output symbol, ``<eos>``, ``<unk>``).
        """
        sp = self.special_ids(tokenizer)
        skip = {sp["bos"], sp["sep"], sp["pad"]}
        ids = [i for i in base.as_id_list(prompt_ids) if i not in skip]
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
        return base.oracle_tokens(self.correct_response_ids(prompt_ids, tokenizer),
                                  len(base.as_id_list(response_ids)))

    def oracle_prefix_ok(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """Whether the response prefix *before* slot ``t`` is error-free (exclusive: slot 0 is always True).

        ``ok[t] = all(response[k] == oracle[k] for k < t)``.

        Returns:
            bool array of length ``len(response_ids)``.
        """
        return base.oracle_prefix_ok(self.correct_response_ids(prompt_ids, tokenizer), response_ids)

    def first_error(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> int | None:
        """Slot of the first response token that differs from the oracle; None for an exactly correct reply.

        A response that stops before its EOS slot has its first error at ``len(response_ids)`` (the missing
        token); trailing ``<pad>`` after a correct EOS is ignored.
        """
        return base.first_error(self.correct_response_ids(prompt_ids, tokenizer), response_ids,
                                self.special_ids(tokenizer)["pad"])

    def verify(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> float:
        """Exact-match verifier: 1.0 iff the response is the correct answer ids followed by EOS, else 0.0.

        Trailing ``<pad>`` tokens after the response (from batched, right-padded generation) are ignored.
        """
        return base.verify(self.correct_response_ids(prompt_ids, tokenizer), response_ids,
                           self.special_ids(tokenizer)["pad"])

    def slot_groups(self, prompt_ids: IdsLike, tokenizer: Any) -> dict[str, np.ndarray]:
        """No named slot groups: every slot of this world is the same kind of step."""
        return {}

    @property
    def max_response_len(self) -> int:
        """Most tokens of a correct response: ``max_len`` symbols and the EOS."""
        return self.max_len + 1

    @property
    def max_sequence_len(self) -> int:
        """Most tokens of ``<bos> x.. <sep>`` plus its correct response."""
        return self.max_len + 2 + self.max_response_len

    # ------------------------------------------------------------------------------------------- training
    def sft_sampler(self, tokenizer: Any, data: None = None) -> _TranslateSampler:
        """Supervised training data: correct sequences, loss on every response token (no data options)."""
        if data is not None:
            raise InputFormatError(f"the {self.name} world takes no training-data options, got {data!r}")
        return _TranslateSampler(self, tokenizer)

    # ------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description ``{"name": "translate_copy", "n_symbols": ..., ...}``."""
        return base.world_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranslateCopyWorld:
        """Inverse of :meth:`to_dict`.

        Raises:
            InputFormatError: if ``data`` names another world or holds unknown keys.
            ConfigError: if the values are invalid.
        """
        return base.world_from_dict(cls, data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the world as JSON to ``path/world.json``, or to ``path`` itself if it ends in ``.json``."""
        return base.save_world(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TranslateCopyWorld:
        """Read a world saved by :meth:`save` (a folder holding ``world.json``, or the JSON file itself).

        Raises:
            DatasetError: if the file does not exist.
            InputFormatError: if it is not valid JSON or does not describe this world.
        """
        return cls.from_dict(read_world_file(path))


class _TranslateSampler:
    """Turns symbol lists into correct training examples without going through text (an ``SFTSampler``)."""

    def __init__(self, world: TranslateCopyWorld, tokenizer: Any) -> None:
        self.world = world
        self.sp = world.special_ids(tokenizer)
        self.in_ids, self.out_ids = world.symbol_ids(tokenizer)
        self.f_table = np.array([world.f(x) for x in range(world.n_symbols)], dtype=np.int64)

    def encode(self, symbols: Sequence[int]) -> SFTExample:
        """The correct example of ``symbols``."""
        x = np.asarray(symbols, dtype=np.int64)
        prompt = [self.sp["bos"], *self.in_ids[x].tolist(), self.sp["sep"]]
        response = [*self.out_ids[self.f_table[x]].tolist(), self.sp["eos"]]
        return SFTExample(prompt, response)

    def sample(self, rng: np.random.Generator, count: int, lo: int, hi: int) -> list[SFTExample]:
        """``count`` correct examples with ``lo..hi`` distinct input symbols (uniform)."""
        lengths = rng.integers(lo, hi + 1, size=count)
        return [self.encode(rng.permutation(self.world.n_symbols)[:n]) for n in lengths]

    def selection(self, rng: np.random.Generator, count: int) -> list[SFTExample]:
        """``count`` correct examples of the world's length range."""
        return [self.encode(self.world.sample_symbols(rng)) for _ in range(count)]
