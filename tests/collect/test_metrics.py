"""Per-token metric functions against naive definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drift.collect import metrics as m


def _rand_lp(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.as_tensor(-rng.exponential(2.0, size=shape), dtype=torch.float32)


def test_sampled_token_metrics_match_naive_loops(rng: np.random.Generator) -> None:
    s, t = _rand_lp(rng, (3, 9)), _rand_lp(rng, (3, 9))
    t[0, 2] = s[0, 2] + 30.0  # exercises the +20 clamp
    lengths = [9, 4, 1]
    mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    adv, k1, k3 = m.advantage(s, t, mask), m.k1(s, t, mask), m.k3(s, t, mask)
    S, C, F = m.prefix_logratio(s, t, mask), m.cum_abs_gap(s, t, mask), m.cum_abs_gap_frac(s, t, mask)
    for b, n in enumerate(lengths):
        run_s = run_c = 0.0
        total = sum(abs(float(t[b, k] - s[b, k])) for k in range(n))
        for j in range(9):
            if j >= n:
                assert adv[b, j] == 0 and k3[b, j] == 0 and S[b, j] == 0 and C[b, j] == 0
                continue
            a = float(t[b, j]) - float(s[b, j])
            d = min(max(a, -20.0), 20.0)
            assert adv[b, j].item() == pytest.approx(a, abs=1e-6)
            assert k1[b, j].item() == pytest.approx(-a, abs=1e-6)
            assert k3[b, j].item() == pytest.approx(min(math.exp(d) - d - 1.0, 10.0), rel=1e-5, abs=1e-6)
            assert S[b, j].item() == pytest.approx(run_s, abs=1e-5)
            assert C[b, j].item() == pytest.approx(run_c, abs=1e-5)
            assert F[b, j].item() == pytest.approx(run_c / total if total > 0 else 0.0, abs=1e-6)
            run_s += a
            run_c += abs(a)
    assert (k3 >= 0).all() and (k3 <= 10).all()
    assert S.dtype == torch.float64 and C.dtype == torch.float64


def test_cum_abs_gap_frac_is_zero_when_no_gap() -> None:
    s = torch.full((1, 5), -1.0)
    frac = m.cum_abs_gap_frac(s, s.clone())
    assert torch.equal(frac, torch.zeros_like(frac, dtype=torch.float64))


def _naive_vocab(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    ls, lt = torch.log_softmax(s.double(), -1), torch.log_softmax(t.double(), -1)
    ps, pt = ls.exp(), lt.exp()
    out: dict[str, list[float]] = {key: [] for key in (
        "student_logprob", "teacher_logprob", "student_entropy", "teacher_entropy", "kl_reverse", "kl_forward",
        "teacher_rank", "topk_overlap", "teacher_mass_student_topk", "student_argmax", "teacher_argmax")}
    kk = min(k, s.shape[1])
    for i in range(s.shape[0]):
        yi = int(y[i])
        out["student_logprob"].append(float(ls[i, yi]))
        out["teacher_logprob"].append(float(lt[i, yi]))
        out["student_entropy"].append(-sum(float(ps[i, v] * ls[i, v]) for v in range(s.shape[1])))
        out["teacher_entropy"].append(-sum(float(pt[i, v] * lt[i, v]) for v in range(s.shape[1])))
        out["kl_reverse"].append(sum(float(ps[i, v] * (ls[i, v] - lt[i, v])) for v in range(s.shape[1])))
        out["kl_forward"].append(sum(float(pt[i, v] * (lt[i, v] - ls[i, v])) for v in range(s.shape[1])))
        out["teacher_rank"].append(sum(1 for v in range(s.shape[1]) if lt[i, v] > lt[i, yi]))
        # ids by decreasing logit, ties in increasing id order: the definition of top-k and argmax
        order_s = np.argsort(-s[i].double().numpy(), kind="stable")
        order_t = np.argsort(-t[i].double().numpy(), kind="stable")
        top_s, top_t = set(order_s[:kk].tolist()), set(order_t[:kk].tolist())
        out["topk_overlap"].append(len(top_s & top_t) / kk)
        out["teacher_mass_student_topk"].append(sum(float(pt[i, v]) for v in top_s))
        out["student_argmax"].append(int(order_s[0]))
        out["teacher_argmax"].append(int(order_t[0]))
    return {key: np.asarray(v) for key, v in out.items()}


@pytest.mark.parametrize(("vocab", "k"), [(7, 3), (40, 16), (5, 16)])
def test_vocab_stats_match_naive(rng: np.random.Generator, vocab: int, k: int) -> None:
    s = torch.as_tensor(rng.normal(0, 2, (6, vocab)), dtype=torch.float32)
    t = torch.as_tensor(rng.normal(0, 2, (6, vocab)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, vocab, 6))
    got = m.vocab_stats(s, t, y, topk=k)
    ref = _naive_vocab(s, t, y, k)
    for key, want in ref.items():
        np.testing.assert_allclose(got[key].double().numpy(), want, atol=1e-5, err_msg=key)
    assert (got["kl_reverse"] >= 0).all() and (got["kl_forward"] >= 0).all()
    np.testing.assert_array_equal(got["student_argmax"].numpy(), s.argmax(-1).numpy())
    np.testing.assert_array_equal(got["teacher_argmax"].numpy(), t.argmax(-1).numpy())


def test_vocab_stats_identical_models_give_zero_kl(rng: np.random.Generator) -> None:
    s = torch.as_tensor(rng.normal(0, 3, (8, 50)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 50, 8))
    got = m.vocab_stats(s, s.clone(), y)
    assert float(got["kl_reverse"].abs().max()) < 1e-6
    assert float(got["kl_forward"].abs().max()) < 1e-6
    assert torch.equal(got["student_logprob"], got["teacher_logprob"])
    assert float(got["topk_overlap"].min()) == 1.0


def test_vocab_stats_rejects_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="shared vocabulary"):
        m.vocab_stats(torch.zeros(2, 5), torch.zeros(2, 6), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(("vocab", "vocab_chunk", "k"), [(50, 13, 5), (50, 1, 3), (5000, 4096, 16), (8192, 2048, 16),
                                                         (8192, 2048, 4)])
def test_tiled_vocab_stats_match_float64_reference(rng: np.random.Generator, vocab: int, vocab_chunk: int,
                                                   k: int) -> None:
    """The online-softmax tiles (and the block top-k on wide tiles) reproduce the one-shot computation."""
    s = torch.as_tensor(rng.normal(0, 3, (9, vocab)), dtype=torch.float32)
    t = torch.as_tensor(rng.normal(0, 3, (9, vocab)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, vocab, 9))
    t[0] = 0.0  # a uniform teacher row: every id ties

    def fs(v0: int, v1: int, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(s[:, v0:v1])

    def ft(v0: int, v1: int, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(t[:, v0:v1])

    got = m.vocab_stats_tiled(fs, ft, y, vocab, rank_anchor_P=t.gather(1, y[:, None])[:, 0],
                              vocab_chunk=vocab_chunk, topk=k)
    ref = m.vocab_stats(s.double(), t.double(), y, topk=k)
    for key in ("student_logprob", "teacher_logprob", "student_entropy", "teacher_entropy", "kl_reverse",
                "kl_forward"):
        np.testing.assert_allclose(got[key].double().numpy(), ref[key].numpy(), atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(got["teacher_rank"].numpy(), ref["teacher_rank"].numpy())
    np.testing.assert_array_equal(got["student_argmax"].numpy(), ref["student_argmax"].numpy())
    np.testing.assert_array_equal(got["teacher_argmax"][1:].numpy(), ref["teacher_argmax"][1:].numpy())  # row 0 ties
    np.testing.assert_allclose(got["topk_overlap"][1:].numpy(), ref["topk_overlap"][1:].numpy())


def _fill(x: torch.Tensor):
    def f(v0: int, v1: int, out: torch.Tensor) -> torch.Tensor:
        return out.copy_(x[:, v0:v1])
    return f


def test_tiled_takes_every_value_but_the_rank_from_the_tiles(rng: np.random.Generator) -> None:
    """A wrong rank anchor changes the rank only: log-probs, entropies and KL come from the tile values."""
    s = torch.as_tensor(rng.normal(0, 3, (6, 70)), dtype=torch.float32)
    t = torch.as_tensor(rng.normal(0, 3, (6, 70)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 70, 6))
    exact = t.gather(1, y[:, None])[:, 0]
    good = m.vocab_stats_tiled(_fill(s), _fill(t), y, 70, rank_anchor_P=exact, vocab_chunk=16)
    bad = m.vocab_stats_tiled(_fill(s), _fill(t), y, 70, rank_anchor_P=exact + 0.5, vocab_chunk=16)
    for key in ("student_logprob", "teacher_logprob", "student_entropy", "teacher_entropy", "kl_reverse",
                "kl_forward", "topk_overlap"):
        assert torch.equal(good[key], bad[key]), key
    assert (bad["teacher_rank"] <= good["teacher_rank"]).all()


def test_tiled_confident_rows_never_give_a_positive_logprob_and_identical_rows_give_zero() -> None:
    """Large logits (ulp of a bfloat16 logit around 0.1): log p(y) <= 0 and self-KL = 0, exactly."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 300, generator=g) * 3).to(torch.bfloat16).float()
    x[:, 7] += 40.0  # a confident target
    x = x.to(torch.bfloat16).float()
    y = torch.full((32,), 7)
    got = m.vocab_stats_tiled(_fill(x), _fill(x.clone()), y, 300, rank_anchor_P=x[:, 7], vocab_chunk=64)
    assert (got["student_logprob"] <= 0).all() and (got["teacher_logprob"] <= 0).all()
    assert torch.equal(got["student_logprob"], got["teacher_logprob"])
    assert float(got["kl_reverse"].abs().max()) == 0.0 and float(got["kl_forward"].abs().max()) == 0.0
    assert (got["teacher_rank"] == 0).all()


# --- top-k columns (teacher_argmax, teacher_mass_student_topk, topk_overlap) where logits tie -------------------

def _tied(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> torch.Tensor:
    """Logits with ties: ``levels`` (4 integer values: every top-k and every block maximum ties), ``bf16`` (normal
    logits rounded to bfloat16, as a bfloat16 model's tiles hold them), ``normal`` (float32, ties only in the
    uniform rows the test adds)."""
    x = torch.as_tensor(rng.normal(0, 3, shape), dtype=torch.float32)
    if kind == "levels":
        return torch.as_tensor(rng.integers(0, 4, shape), dtype=torch.float32)
    if kind == "bf16":
        return x.to(torch.bfloat16).float()
    return x


def _naive_topk_columns(s: torch.Tensor, t: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """The definitions on the same float32 values, in float64: ids by decreasing logit, ties in increasing id order
    (a stable sort); mass = the teacher's softmax summed over the student's top-k ids."""
    xs, xt = s.double().numpy(), t.double().numpy()
    order_s, order_t = np.argsort(-xs, axis=1, kind="stable"), np.argsort(-xt, axis=1, kind="stable")
    q = np.exp(xt - xt.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    kk = min(k, xs.shape[1])
    top_s, top_t = order_s[:, :kk], order_t[:, :kk]
    return {
        "student_argmax": order_s[:, 0], "teacher_argmax": order_t[:, 0],
        "topk_overlap": np.array([len(set(a) & set(b)) / kk for a, b in zip(top_s, top_t, strict=True)],
                                 dtype=np.float32),
        "teacher_mass_student_topk": np.take_along_axis(q, top_s, axis=1).sum(1),
    }


def _assert_topk_columns(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    for key in ("student_argmax", "teacher_argmax", "topk_overlap"):
        np.testing.assert_array_equal(got[key].numpy(), want[key], err_msg=key)
    mass = got["teacher_mass_student_topk"]
    assert mass.dtype == torch.float32 and (mass >= 0).all() and (mass <= 1).all()
    np.testing.assert_allclose(mass.double().numpy(), want["teacher_mass_student_topk"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["levels", "bf16", "normal"])
@pytest.mark.parametrize(("vocab", "vocab_chunk", "k"), [(50, 13, 5), (50, 1, 3), (7, 7, 7), (1000, 333, 16),
                                                         (3000, 1024, 16), (8192, 2048, 16), (8192, 2048, 4),
                                                         (5000, 4096, 16)])
def test_tiled_top_k_columns_match_their_definition_with_ties(rng: np.random.Generator, kind: str, vocab: int,
                                                              vocab_chunk: int, k: int) -> None:
    """Tiles that do not divide V, the block top-k (V = 8192, 3000's 1024-wide tiles) and the plain one, on tied
    logits: ties go to the lower id in the student's top k (so in the mass), the overlap and both argmaxes."""
    s, t = _tied(rng, kind, (9, vocab)), _tied(rng, kind, (9, vocab))
    s[0] = 0.0  # a uniform student row: its top k are ids 0..k-1, the mass is q_0 + ... + q_{k-1}
    t[1] = 0.0  # a uniform teacher row
    s[2], t[2] = 1.0, 1.0
    y = torch.as_tensor(rng.integers(0, vocab, 9))
    got = m.vocab_stats_tiled(_fill(s), _fill(t), y, vocab, rank_anchor_P=t.gather(1, y[:, None])[:, 0],
                              vocab_chunk=vocab_chunk, topk=k)
    _assert_topk_columns(got, _naive_topk_columns(s, t, k))
    np.testing.assert_allclose(got["teacher_mass_student_topk"][2].item(), min(k, vocab) / vocab, atol=1e-6)


@pytest.mark.parametrize(("vocab", "k"), [(40, 16), (300, 16), (8192, 16), (5, 16)])
def test_one_shot_top_k_columns_match_their_definition_on_bfloat16_logits(rng: np.random.Generator, vocab: int,
                                                                          k: int) -> None:
    """:func:`vocab_stats` on bfloat16 logits computes in float32; its top-k columns follow the same tie rule."""
    s, t = _tied(rng, "bf16", (6, vocab)).bfloat16(), _tied(rng, "bf16", (6, vocab)).bfloat16()
    s[0] = 0.0
    y = torch.as_tensor(rng.integers(0, vocab, 6))
    got = m.vocab_stats(s, t, y, topk=k)
    _assert_topk_columns(got, _naive_topk_columns(s.float(), t.float(), k))


def test_teacher_mass_on_the_student_top_k_invariants(rng: np.random.Generator) -> None:
    """k = V gives mass 1; identical models give the student's own top-k mass; a teacher that puts its mass on
    ids outside the student's top k gives ~0."""
    s = torch.as_tensor(rng.normal(0, 3, (5, 200)), dtype=torch.float32)
    y = torch.zeros(5, dtype=torch.long)
    anchor = s[:, 0].clone()
    full = m.vocab_stats_tiled(_fill(s), _fill(s.clone()), y, 200, rank_anchor_P=anchor, vocab_chunk=64, topk=200)
    np.testing.assert_allclose(full["teacher_mass_student_topk"].numpy(), 1.0, atol=1e-6)
    own = m.vocab_stats_tiled(_fill(s), _fill(s.clone()), y, 200, rank_anchor_P=anchor, vocab_chunk=64, topk=8)
    p = torch.softmax(s.double(), -1)
    np.testing.assert_allclose(own["teacher_mass_student_topk"].numpy(), p.topk(8).values.sum(-1).numpy(), atol=1e-6)
    t = s.clone()
    t.scatter_(1, s.topk(8).indices, -50.0)  # the teacher avoids exactly the student's top 8
    away = m.vocab_stats_tiled(_fill(s), _fill(t), y, 200, rank_anchor_P=t[:, 0], vocab_chunk=64, topk=8)
    assert float(away["teacher_mass_student_topk"].max()) < 1e-15
