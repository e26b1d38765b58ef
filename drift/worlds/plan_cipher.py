"""The plan-cipher world: the first response tokens choose a key, and the rest follows from it.

Task. The prompt is ``<bos>``, a *cue* ``c`` (tokens ``c00 ..``), ``n`` distinct input symbols ``x_1 .. x_n``
(tokens ``i00 ..``) and ``<sep>``. The correct response is the cue's *key* ``k_1 .. k_m`` (tokens ``k0 ..``),
then the inputs enciphered with the key, then ``<eos>``::

    prompt   <bos> c05 i07 i14 i02 <sep>
    response k2 k3 o2_08 o2_15 o2_03 <eos>        (key of c05 = (2, 3); f_2(x) = x + 7*2 + 3 mod 16)

The key of each cue comes from a fixed random table (``key_table``, drawn from ``table_seed``): nothing in the
prompt predicts it, a model has to memorise it. The cipher is determined by the first key token ``a = k_1``: the
input ``x`` is written as ``o{a}_{f_a(x)}`` with the Caesar shift ``f_a(x) = (x + 7a + 3) mod n_symbols`` in
the alphabet of plan ``a`` (``o{a}_00 ..``). Given the emitted ``k_1``, every later token is a local,
deterministic function of it and of the prompt; the other key tokens only have to be right.

Why the early decision fixes the outcome. A wrong ``k_1`` puts every later token in the wrong alphabet, so the
whole answer fails the exact-match verifier and the slot-based oracle (the correct answer's token at slot
``t``) disagrees with every later token. The shipped models are trained to follow the key they are given
(:class:`PlanData` ``corrupt_key_prob``), so a teacher scoring a wrong-key prefix keeps enciphering with that
key: its supervision after the error is consistent with the error, and late supervision adds little. This is
the world in which the paper's "prefix-30 ≈ all" should hold, the opposite of the translate-copy world
(:mod:`drift.worlds.translate_copy`), where later tokens carry their own signal.

Prompt length. By default every prompt holds exactly 8 symbols (``min_len == max_len``): with a fixed length
a small model copies by relative position, which it learns in ~150 steps, while with variable lengths it has to
locate its last output's source as in the first world, which it learns far more slowly (measured on this CPU,
2 x 96 Llama, 500 steps: n = 8..16 reached 0.37 teacher-forced accuracy on the enciphered symbols, n = 16
fixed 0.93, n = 8 fixed 1.0 by step 150).

Ground truth. :meth:`PlanCipherWorld.oracle_tokens`, :meth:`PlanCipherWorld.oracle_prefix_ok`,
:meth:`PlanCipherWorld.first_error` and :meth:`PlanCipherWorld.verify`, as in the first world;
:meth:`PlanCipherWorld.slot_groups` names the ``key`` and ``body`` slots for evaluations.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from drift.config import Checks, opt
from drift.errors import InputFormatError
from drift.worlds import base
from drift.worlds.base import SPECIAL_TOKENS, IdsLike, SFTExample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["PlanCipherWorld", "PlanData"]

SHIFT_MULT, SHIFT_OFFSET = 7, 3
"""The cipher of plan ``a``: ``f_a(x) = (x + SHIFT_MULT * a + SHIFT_OFFSET) mod n_symbols``."""


@dataclass(frozen=True)
class PlanCipherWorld:
    """Plan-cipher task: emit the cue's memorised key, then the inputs enciphered by the key's first token.

    Example:
        >>> w = PlanCipherWorld()
        >>> w.key(5), w.prompt_text(5, [7, 14]), w.answer_text(5, [7, 14])
        ((2, 3), 'c05 i07 i14 <sep>', 'k2 k3 o2_08 o2_15')
    """

    n_cues: int = opt(64, "cues (each has its own key in the random table)")
    n_symbols: int = opt(16, "size of the input alphabet (and of each plan's output alphabet)")
    n_plans: int = opt(4, "key symbols; the first key token picks one of this many ciphers")
    key_len: int = opt(2, "key tokens at the start of every response (m)")
    min_len: int = opt(8, "fewest input symbols in a prompt")
    max_len: int = opt(8, "most input symbols in a prompt (at most n_symbols: symbols are distinct)")
    table_seed: int = opt(0, "seed of the cue -> key table (numpy default_rng)")

    name: ClassVar[str] = "plan_cipher"

    def __post_init__(self) -> None:
        c = Checks("PlanCipherWorld")
        keys = ("n_cues", "n_symbols", "n_plans", "key_len", "min_len", "max_len", "table_seed")
        for key in keys:
            value = getattr(self, key)
            c.check(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an int, got {value!r}")
        if c.problems:
            c.raise_if_any()
        c.in_range("n_cues", self.n_cues, 1, 1000)
        c.in_range("n_symbols", self.n_symbols, 2, 100)
        c.in_range("n_plans", self.n_plans, 2, 10)
        c.in_range("key_len", self.key_len, 1, 8)
        c.positive("min_len", self.min_len)
        c.check(self.table_seed >= 0, f"table_seed must be >= 0, got {self.table_seed}")
        c.check(self.max_len >= self.min_len, f"max_len={self.max_len} must be >= min_len={self.min_len}")
        c.check(self.max_len <= self.n_symbols,
                f"max_len={self.max_len} must be <= n_symbols={self.n_symbols} (prompt symbols are distinct)")
        c.raise_if_any()

    # ------------------------------------------------------------------------------------- key and cipher
    @cached_property
    def key_table(self) -> np.ndarray:
        """``key_table[c]``: the key of cue ``c``, ``key_len`` symbols in ``[0, n_plans)`` (int64, read-only)."""
        table = np.random.default_rng(self.table_seed).integers(0, self.n_plans, size=(self.n_cues, self.key_len))
        table.flags.writeable = False
        return table

    def key(self, cue: int) -> tuple[int, ...]:
        """The key of ``cue``."""
        return tuple(int(k) for k in self.key_table[int(cue)])

    def cipher(self, plan: int, x: int) -> int:
        """``f_plan(x) = (x + 7 * plan + 3) mod n_symbols``: the output symbol of ``x`` under ``plan``."""
        return (int(x) + SHIFT_MULT * int(plan) + SHIFT_OFFSET) % self.n_symbols

    @property
    def max_response_len(self) -> int:
        """Most tokens of a correct response: key, ``max_len`` enciphered symbols, EOS."""
        return self.key_len + self.max_len + 1

    @property
    def max_sequence_len(self) -> int:
        """Most tokens of ``<bos> c x.. <sep>`` plus its correct response."""
        return self.max_len + 3 + self.max_response_len

    # ----------------------------------------------------------------------------------------- tokens
    def _w(self, n: int) -> int:
        return max(1, len(str(n - 1)))

    def cue_token(self, cue: int) -> str:
        """Token of cue ``c`` (``c05``)."""
        return f"c{int(cue):0{max(2, self._w(self.n_cues))}d}"

    def input_token(self, x: int) -> str:
        """Token of input symbol ``x`` (``i07``)."""
        return f"i{int(x):0{max(2, self._w(self.n_symbols))}d}"

    def key_token(self, k: int) -> str:
        """Token of key symbol ``k`` (``k3``)."""
        return f"k{int(k)}"

    def output_token(self, plan: int, y: int) -> str:
        """Token of output symbol ``y`` in the alphabet of ``plan`` (``o2_08``)."""
        return f"o{int(plan)}_{int(y):0{max(2, self._w(self.n_symbols))}d}"

    def vocab(self) -> dict[str, int]:
        """Token -> id: the special tokens, cues, inputs, key symbols, then each plan's output alphabet."""
        tokens = [*SPECIAL_TOKENS.values()]
        tokens += [self.cue_token(c) for c in range(self.n_cues)]
        tokens += [self.input_token(x) for x in range(self.n_symbols)]
        tokens += [self.key_token(k) for k in range(self.n_plans)]
        tokens += [self.output_token(a, y) for a in range(self.n_plans) for y in range(self.n_symbols)]
        return {tok: i for i, tok in enumerate(tokens)}

    def build_tokenizer(self) -> PreTrainedTokenizerFast:
        """The world's word-level Hugging Face tokenizer (see :func:`drift.worlds.base.word_level_tokenizer`)."""
        return base.word_level_tokenizer(self.vocab(), self.max_sequence_len)

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        """Ids of ``bos``, ``sep``, ``eos`` and ``pad`` in ``tokenizer`` (raises if one is missing)."""
        return base.special_ids(self, tokenizer)

    def cue_ids(self, tokenizer: Any) -> np.ndarray:
        """Ids of the cue tokens, ``n_cues`` long."""
        return base.token_ids(self, tokenizer, "cue", [self.cue_token(c) for c in range(self.n_cues)])

    def input_ids(self, tokenizer: Any) -> np.ndarray:
        """Ids of the input tokens, ``n_symbols`` long."""
        return base.token_ids(self, tokenizer, "input", [self.input_token(x) for x in range(self.n_symbols)])

    def key_ids(self, tokenizer: Any) -> np.ndarray:
        """Ids of the key tokens, ``n_plans`` long."""
        return base.token_ids(self, tokenizer, "key", [self.key_token(k) for k in range(self.n_plans)])

    def output_ids(self, tokenizer: Any) -> np.ndarray:
        """Ids of the output tokens: ``out[plan, y]``, shape ``(n_plans, n_symbols)``."""
        flat = base.token_ids(self, tokenizer, "output", [self.output_token(a, y) for a in range(self.n_plans)
                                                          for y in range(self.n_symbols)])
        return flat.reshape(self.n_plans, self.n_symbols)

    # -------------------------------------------------------------------------------------------- examples
    def sample_instance(self, rng: np.random.Generator, n: int | None = None) -> tuple[int, list[int]]:
        """A uniform cue and ``n`` distinct input symbols (``n`` uniform in ``[min_len, max_len]`` if None)."""
        if n is None:
            n = int(rng.integers(self.min_len, self.max_len + 1))
        if not 1 <= n <= self.n_symbols:
            raise ValueError(f"n must be in [1, {self.n_symbols}] (symbols are distinct), got {n}")
        cue = int(rng.integers(self.n_cues))
        return cue, [int(x) for x in rng.choice(self.n_symbols, size=n, replace=False)]

    def prompt_text(self, cue: int, symbols: Sequence[int]) -> str:
        """Prompt text ``"c05 i07 i14 <sep>"`` (the tokenizer adds ``<bos>``)."""
        return " ".join([self.cue_token(cue), *(self.input_token(x) for x in symbols), SPECIAL_TOKENS["sep_token"]])

    def answer_text(self, cue: int, symbols: Sequence[int]) -> str:
        """The correct response text without the EOS, e.g. ``"k2 k3 o2_08 o2_15"``."""
        key = self.key(cue)
        return " ".join([*(self.key_token(k) for k in key),
                         *(self.output_token(key[0], self.cipher(key[0], x)) for x in symbols)])

    def make_prompt_records(self, rng: np.random.Generator, count: int, id_prefix: str, *,
                            exclude: Collection[str] = ()) -> list[dict[str, str]]:
        """``count`` distinct prompt rows ``{"id", "prompt", "answer", "task"}`` (ids ``{id_prefix}-00000``).

        Args:
            rng: the random stream (the rows are a deterministic function of its state).
            count: number of rows.
            id_prefix: prefix of the row ids.
            exclude: prompt texts that must not appear (e.g. the training prompts).
        """
        def draw() -> tuple[str, str]:
            cue, symbols = self.sample_instance(rng)
            return self.prompt_text(cue, symbols), self.answer_text(cue, symbols)

        return base.draw_prompt_records(draw, count, id_prefix, self.name, exclude=exclude)

    # -------------------------------------------------------------------------------------------- oracles
    def parse_prompt_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> tuple[int, list[int]]:
        """``(cue, input symbols)`` of a tokenized prompt, ignoring ``<bos>``, ``<sep>`` and ``<pad>``.

        Raises:
            InputFormatError: if the prompt is not one cue followed by input symbols.
        """
        sp = self.special_ids(tokenizer)
        skip = {sp["bos"], sp["sep"], sp["pad"]}
        ids = [i for i in base.as_id_list(prompt_ids) if i not in skip]
        cue_of = {int(t): c for c, t in enumerate(self.cue_ids(tokenizer))}
        input_of = {int(t): x for x, t in enumerate(self.input_ids(tokenizer))}
        if not ids or ids[0] not in cue_of or any(i not in input_of for i in ids[1:]):
            shown = tokenizer.convert_ids_to_tokens(ids[:6])
            raise InputFormatError(f"prompt {shown} is not a {self.name} prompt; prompts are "
                                   "'<bos> c.. i.. i.. <sep>' (one cue, then input symbols)")
        return cue_of[ids[0]], [input_of[i] for i in ids[1:]]

    def correct_response_ids(self, prompt_ids: IdsLike, tokenizer: Any) -> list[int]:
        """Token ids of the correct response for a tokenized prompt: key, enciphered inputs, EOS."""
        cue, symbols = self.parse_prompt_ids(prompt_ids, tokenizer)
        return self._response(self.key(cue), symbols, tokenizer)

    def _response(self, key: Sequence[int], symbols: Sequence[int], tokenizer: Any) -> list[int]:
        key_ids, out_ids = self.key_ids(tokenizer), self.output_ids(tokenizer)
        plan = int(key[0])
        return [*(int(key_ids[k]) for k in key), *(int(out_ids[plan, self.cipher(plan, x)]) for x in symbols),
                self.special_ids(tokenizer)["eos"]]

    def slot_groups(self, prompt_ids: IdsLike, tokenizer: Any) -> dict[str, np.ndarray]:
        """``{"key": slots < key_len, "body": the enciphered symbols and the EOS}`` over the correct response."""
        _, symbols = self.parse_prompt_ids(prompt_ids, tokenizer)
        key_T = np.arange(self.key_len + len(symbols) + 1) < self.key_len
        return {"key": key_T, "body": ~key_T}

    def oracle_tokens(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """Slot-based oracle: the correct response's token at each response slot ``t`` (-1 after its EOS).

        The oracle ignores what the response holds: after a wrong key it keeps naming the correct key's
        cipher, not the continuation of the error.

        Returns:
            int64 array of length ``len(response_ids)``.
        """
        return base.oracle_tokens(self.correct_response_ids(prompt_ids, tokenizer),
                                  len(base.as_id_list(response_ids)))

    def oracle_prefix_ok(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> np.ndarray:
        """``ok[t] = all(response[k] == oracle[k] for k < t)`` (slot 0 is always True)."""
        return base.oracle_prefix_ok(self.correct_response_ids(prompt_ids, tokenizer), response_ids)

    def first_error(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> int | None:
        """Slot of the first wrong token (``len(response)`` if it stops early); None for a correct reply."""
        return base.first_error(self.correct_response_ids(prompt_ids, tokenizer), response_ids,
                                self.special_ids(tokenizer)["pad"])

    def verify(self, prompt_ids: IdsLike, response_ids: IdsLike, tokenizer: Any) -> float:
        """Exact-match verifier: 1.0 iff the response is the correct key, cipher and EOS (trailing pads ignored)."""
        return base.verify(self.correct_response_ids(prompt_ids, tokenizer), response_ids,
                           self.special_ids(tokenizer)["pad"])

    # ------------------------------------------------------------------------------------------- training
    def sft_sampler(self, tokenizer: Any, data: PlanData | None = None) -> _PlanSampler:
        """Supervised training data for this world (``data``: :class:`PlanData`, default ``PlanData()``)."""
        return _PlanSampler(self, tokenizer, data if data is not None else PlanData())

    # ------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description ``{"name": "plan_cipher", "n_cues": ..., ...}``."""
        return base.world_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanCipherWorld:
        """Inverse of :meth:`to_dict` (raises ``InputFormatError`` / ``ConfigError``)."""
        return base.world_from_dict(cls, data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the world as JSON to ``path/world.json``, or to ``path`` itself if it ends in ``.json``."""
        return base.save_world(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlanCipherWorld:
        """Read a world saved by :meth:`save` (a folder holding ``world.json``, or the file itself)."""
        return cls.from_dict(base.read_world_file(path))


@dataclass(frozen=True)
class PlanData:
    """Training-data options of a plan-cipher model (:meth:`PlanCipherWorld.sft_sampler`)."""

    corrupt_key_prob: float = opt(0.25, "share of examples whose key is replaced by a random one, without loss on "
                                        "the key and with the cipher of the replaced key: teaches a model to "
                                        "follow the key it is given")
    known_cue_frac: float = opt(1.0, "share of cues whose key carries loss (a student that never learnt the "
                                     "other plans is weak exactly on the early decision)")
    known_seed: int = opt(0, "seed of which cues are known")

    def __post_init__(self) -> None:
        c = Checks("PlanData")
        c.in_range("corrupt_key_prob", self.corrupt_key_prob, 0.0, 1.0)
        c.in_range("known_cue_frac", self.known_cue_frac, 0.0, 1.0)
        c.raise_if_any()


class _PlanSampler:
    """Draws plan-cipher training examples as ids (:class:`~drift.worlds.base.SFTSampler`)."""

    def __init__(self, world: PlanCipherWorld, tokenizer: Any, data: PlanData) -> None:
        self.world, self.tokenizer, self.data = world, tokenizer, data
        self.sp = world.special_ids(tokenizer)
        self.cue_ids, self.in_ids = world.cue_ids(tokenizer), world.input_ids(tokenizer)
        n_known = round(data.known_cue_frac * world.n_cues)
        order = np.random.default_rng([data.known_seed, world.table_seed]).permutation(world.n_cues)
        self.known = np.zeros(world.n_cues, dtype=bool)
        self.known[order[:n_known]] = True

    def _example(self, cue: int, symbols: Sequence[int], key: Sequence[int] | None) -> SFTExample:
        """The example of ``cue`` and ``symbols``; ``key`` replaces the cue's key (then no loss on it)."""
        w = self.world
        x = np.asarray(symbols, dtype=np.int64)
        prompt = [self.sp["bos"], int(self.cue_ids[cue]), *self.in_ids[x].tolist(), self.sp["sep"]]
        response = w._response(w.key(cue) if key is None else key, symbols, self.tokenizer)
        key_loss = key is None and bool(self.known[cue])
        return SFTExample(prompt, response, [key_loss] * w.key_len + [True] * (len(response) - w.key_len))

    def sample(self, rng: np.random.Generator, count: int, lo: int, hi: int) -> list[SFTExample]:
        """``count`` examples with ``lo..hi`` input symbols; a share ``corrupt_key_prob`` with a random key."""
        w = self.world
        out = []
        for n in rng.integers(lo, hi + 1, size=count):
            cue = int(rng.integers(w.n_cues))
            symbols = rng.permutation(w.n_symbols)[:n].tolist()
            corrupt = rng.random() < self.data.corrupt_key_prob
            key = rng.integers(0, w.n_plans, size=w.key_len).tolist() if corrupt else None
            out.append(self._example(cue, symbols, key))
        return out

    def selection(self, rng: np.random.Generator, count: int) -> list[SFTExample]:
        """``count`` correct examples of the world's length range, loss on every token."""
        out = []
        for _ in range(count):
            prompt, response, _ = self._example(*self.world.sample_instance(rng), None)
            out.append(SFTExample(prompt, response, None))
        return out
