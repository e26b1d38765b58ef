"""Schedule kinds: formulas against naive per-token loops, bounds, padding, numpy/torch parity, specs.

The ``naive_*`` references below are written from PAPER.md §5 one token at a time, independently of the
vectorized torch code in drift.schedules.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import drift.schedules as ds
from drift.curves import CURVES
from drift.errors import DriftError, InputFormatError, ScheduleError

# One or more specs of every kind; used for round trips, parity and padding checks.
SAMPLES: list[dict] = [
    {"kind": "uniform"},
    {"kind": "prefix_mask", "frac": 0.3},
    {"kind": "prefix_mask", "start_ratio": 0.2, "end_ratio": 0.9, "anneal": "linear", "min_tokens": 2},
    {"kind": "suffix_mask", "frac": 0.3},
    {"kind": "prefix_weight"},
    {"kind": "prefix_weight", "frac": 0.3, "multiplier": 2.0},
    {"kind": "linear", "gamma": 0.5},
    {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"},
    {"kind": "iw_opd", "gamma": 0.7, "use_abs": False, "denominator": "paper"},
    {"kind": "teacher_conf", "window": 4, "quantile": 0.5, "alpha": 0.7, "floor": 0.05},
    {"kind": "ideal_ratio", "alpha": 0.1},
    {"kind": "ideal_ratio", "alpha": 0.5, "normalize": True, "blend_gamma": 0.5},
    {"kind": "pwopsd"},
    {"kind": "fitted", "family": "exponential", "params": {"a": 1.0, "tau": 0.3, "c": 0.5},
     "source": {"dataset": "runs/toy", "metric": "k3"}},
    {"kind": "fitted", "family": "power", "params": {"a": 1.0, "b": 0.5, "c": 0.2}, "x": "abs",
     "normalize": "first", "floor": 0.1, "ceiling": 2.0},
    {"kind": "vector", "values": [1.5, 1.2, 1.0, 0.8]},
    {"kind": "vector", "values": [2.0, 1.0, 0.5], "x": "abs", "edges": [0, 3, 6, 9]},
    {"kind": "shuffled", "base": {"kind": "iw_opd", "gamma": 0.5}, "seed": 3},
]
# shuffled has no per-row naive reference (its permutation is its own); tests/schedules/test_shuffled.py checks it
NOT_PER_ROW = ("ideal_ratio", "shuffled")
IDS = [f"{d['kind']}-{i}" for i, d in enumerate(SAMPLES)]
STEP = {"step": 3, "total_steps": 7}


def batch(rng: np.random.Generator, B: int = 5, L: int = 13, *, side: str = "right"):
    """Random advantages / teacher log-probs with variable valid lengths (one row has length 1)."""
    adv = rng.normal(-0.3, 1.0, size=(B, L))
    teacher = -np.abs(rng.normal(1.0, 1.0, size=(B, L)))
    lengths = np.r_[L, 1, rng.integers(2, L + 1, size=B - 2)]
    mask = np.zeros((B, L), dtype=bool)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = True
        elif side == "left":
            mask[b, L - n:] = True
        else:  # holes: a random subset of n positions
            mask[b, np.sort(rng.choice(L, size=n, replace=False))] = True
    adv[~mask] = np.nan  # garbage at padding must not leak into the weights
    teacher[~mask] = np.nan
    return adv, teacher, mask


# ----------------------------------------------------------------------------------- naive references

def naive_keep(L: int, ratio: float, min_tokens: int) -> int:
    prod = float(np.float32(L) * np.float32(ratio))  # verl multiplies in float32
    return min(max(math.ceil(prod), min_tokens), L)


def naive_progress(step, total) -> float:
    if total <= 1:
        return 1.0
    return min(max((step - 1) / (total - 1), 0.0), 1.0)


def naive_iw(a: list[float], gamma: float, use_abs: bool = True, denominator: str = "code",
             eps: float = 1e-8) -> list[float]:
    p = [abs(x) if use_abs else x for x in a]
    if denominator == "code":
        den = sum(p) + eps
    else:
        den = sum(p[: len(p) - 1])
        den = eps if abs(den) < eps else den
    out, c = [], 0.0
    for t in range(len(p)):
        out.append(1.0 + gamma * min(max(1.0 - c / den, 0.0), 1.0))
        c += p[t]
    return out


def naive_conf(lp: list[float], window: int, q: float, alpha: float, floor: float) -> list[float]:
    nll = [-x for x in lp]
    out = []
    for t in range(len(nll)):
        win = nll[max(0, t - window):t]  # strictly before t
        if not win:
            Q = 0.0
        else:
            k = max(1, int(np.floor(np.float32(1.0 - q) * np.float32(len(win)))))
            Q = sum(sorted(win, reverse=True)[:k]) / k
        out.append(max(math.exp(-alpha * Q), floor))
    return out


def naive_row(spec: dict, a: list[float], lp: list[float], step=None, total=None) -> list[float]:
    """The weights of one sequence's valid tokens, token by token."""
    s = ds.load(spec)
    L = len(a)
    kind = spec["kind"]
    if kind == "uniform":
        return [1.0] * L
    if kind in ("prefix_mask", "prefix_weight"):
        ratio = s.start_ratio
        if s.start_ratio != s.end_ratio:
            p = naive_progress(step, total)
            an = 0.5 * (1 - math.cos(math.pi * p)) if s.anneal == "cosine" else p
            ratio = min(max(s.start_ratio + (s.end_ratio - s.start_ratio) * an, 0.0), 1.0)
        keep = naive_keep(L, ratio, s.min_tokens)
        m = [1.0 if t < keep else 0.0 for t in range(L)]
        return m if kind == "prefix_mask" else [1.0 + (s.multiplier - 1.0) * x for x in m]
    if kind == "suffix_mask":
        keep = naive_keep(L, s.frac, 0)
        return [1.0 if t >= L - keep else 0.0 for t in range(L)]
    if kind == "linear":
        return [1.0 + s.gamma * (1.0 - t / L) for t in range(L)]
    if kind == "iw_opd":
        return naive_iw(a, s.gamma, s.use_abs, s.denominator, s.epsilon)
    if kind == "teacher_conf":
        return naive_conf(lp, s.window, s.quantile, s.alpha, s.floor)
    if kind == "pwopsd":
        return [s.w_min + (1 - s.w_min) / (1 + math.exp(-(((i - 0.5) / L - s.tau) / s.s)))
                for i in range(1, L + 1)]
    if kind == "vector":
        edges = s.bin_edges()
        out = []
        for t in range(L):
            x = (t + 0.5) / L if s.x == "rel" else t
            i = 0
            while i + 1 < len(s.values) and x >= edges[i + 1]:
                i += 1
            out.append(s.values[i])
        return out
    if kind == "fitted":
        xs = [(t + 0.5) / L if s.x == "rel" else t + 1.0 for t in range(L)]
        v = [float(CURVES[s.family](x, **s.params)) for x in xs]
        v = [min(max(x, s.floor), s.ceiling if s.ceiling is not None else math.inf) for x in v]
        norm = {"mean": sum(v) / L, "max": max(v), "first": v[0], "none": 1.0}[s.normalize]
        return [x / norm for x in v]
    raise AssertionError(f"no naive reference for {kind}")  # ideal_ratio is batch-coupled; tested apart


# ---------------------------------------------------------------------------------------- worked example

def test_worked_example_code_and_paper_forms():
    a = np.array([[1.0, 1.0, 2.0]])
    code = ds.load({"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"}).weights(a)
    paper = ds.load({"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "paper"}).weights(a)
    np.testing.assert_allclose(code, [[1.5, 1.375, 1.25]], atol=1e-8)
    assert paper.tolist() == [[1.5, 1.25, 1.0]]  # exactly: the paper's last weight is 1.0


def test_iw_matches_trl_gamma_form(rng):
    a = rng.normal(size=(4, 50))
    gamma = 0.5
    d = np.abs(a)
    prefix = np.cumsum(d, axis=1) - d
    total = np.maximum(d.sum(axis=1, keepdims=True), 1e-8)  # TRL: total.clamp_min(eps)
    trl = 1 + gamma * (1 - prefix / total)
    np.testing.assert_allclose(ds.IwOpd(gamma=gamma).weights(a), trl, atol=1e-9)


def test_iw_constant_abs_advantage_is_linear():
    T = 40
    a = -np.ones(T)
    t = np.arange(T)
    np.testing.assert_allclose(ds.IwOpd(gamma=0.5).weights(a), 1 + 0.5 * (1 - t / T), atol=1e-8)
    np.testing.assert_allclose(ds.IwOpd(gamma=0.5, denominator="paper").weights(a),
                               1 + 0.5 * (1 - t / (T - 1)), atol=1e-12)
    np.testing.assert_allclose(ds.Linear(gamma=0.5).weights(a), 1 + 0.5 * (1 - t / T), atol=1e-12)


@pytest.mark.parametrize("denominator", ["code", "paper"])
@pytest.mark.parametrize("use_abs", [True, False])
def test_iw_matches_naive_loop(rng, use_abs, denominator):
    adv, _, mask = batch(rng, B=6, L=17)
    adv[1, 0] = 3.0  # make a signed total negative in some rows
    s = ds.IwOpd(gamma=0.5, use_abs=use_abs, denominator=denominator)
    w = s.weights(adv, mask)
    for b in range(adv.shape[0]):
        np.testing.assert_allclose(w[b, mask[b]], naive_iw(list(adv[b, mask[b]]), 0.5, use_abs, denominator),
                                   atol=1e-12)


def test_iw_signed_mode_saturates_when_total_is_negative():
    a = np.array([[2.0, -1.0, -3.0, 0.5]])  # signed total -1.5: 1 - F exceeds 1 or goes negative
    w = ds.IwOpd(gamma=0.5, use_abs=False).weights(a)
    assert np.all((w >= 1.0) & (w <= 1.5))
    np.testing.assert_allclose(w[0], naive_iw([2.0, -1.0, -3.0, 0.5], 0.5, use_abs=False), atol=1e-12)


def test_iw_bounds_and_monotone(rng):
    adv, _, mask = batch(rng, B=8, L=40)
    w = ds.IwOpd(gamma=0.5).weights(adv, mask)
    for b in range(8):
        row = w[b, mask[b]]
        assert np.all((row >= 1.0) & (row <= 1.5))
        assert np.all(np.diff(row) <= 1e-12)  # non-increasing along t
    gamma0 = ds.IwOpd(gamma=0.0).weights(adv, mask)
    assert np.array_equal(gamma0, mask.astype(float))  # gamma = 0 is plain OPD


def test_paper_form_last_weight_is_one(rng):
    adv, _, mask = batch(rng, B=6, L=20)
    w = ds.IwOpd(gamma=0.5, denominator="paper").weights(adv, mask)
    for b in range(6):
        if mask[b].sum() > 1:
            assert w[b, np.flatnonzero(mask[b])[-1]] == 1.0
        else:  # a one-token row has no prefix to divide by: w = 1 + gamma (documented)
            assert w[b, mask[b]].tolist() == [1.5]


# ------------------------------------------------------------------------------------- masks, annealing

RATIOS = [0.0, 0.01, 0.1, 0.14, 0.28, 0.3, 0.5, 0.56, 0.6, 0.7, 0.99, 1.0]


@pytest.mark.parametrize("min_tokens", [0, 1, 3])
def test_prefix_mask_keeps_stated_count(min_tokens):
    lengths = list(range(1, 81))
    L = max(lengths)
    mask = np.arange(L)[None, :] < np.array(lengths)[:, None]
    for ratio in RATIOS:
        s = ds.PrefixMask(start_ratio=ratio, end_ratio=ratio, min_tokens=min_tokens)
        w = s.weights(np.zeros((len(lengths), L)), mask)
        assert set(np.unique(w)) <= {0.0, 1.0}
        for b, n in enumerate(lengths):
            keep = naive_keep(n, ratio, min_tokens)
            assert w[b].sum() == keep, (n, ratio)
            assert np.all(w[b, :keep] == 1.0) and np.all(w[b, keep:] == 0.0)


def test_keep_uses_float32_like_verl():
    # verl multiplies a float32 length by the ratio: float32(0.3) * 50 = 15.000001 -> 16 tokens, while
    # exact arithmetic gives 15. drift keeps what the fork keeps (documented in drift.schedules.masks).
    assert math.ceil(50 * 0.3) == 15 and math.ceil(25 * 0.28) == 8
    assert ds.PrefixMask.from_params({"frac": 0.3}).weights(np.zeros(50)).sum() == 16
    assert ds.SuffixMask(frac=0.3).weights(np.zeros(50)).sum() == 16
    assert ds.PrefixMask.from_params({"frac": 0.28}).weights(np.zeros(25)).sum() == 7
    assert int(ds.keep_count(torch.tensor([50.0]), 0.3)[0]) == 16


def test_suffix_mask_keeps_stated_count():
    for frac in [0.01, 0.1, 0.3, 0.5, 0.7, 1.0]:
        for n in range(1, 61):
            w = ds.SuffixMask(frac=frac).weights(np.zeros(n))
            keep = naive_keep(n, frac, 0)
            assert w.sum() == keep
            assert np.all(w[n - keep:] == 1.0) and np.all(w[: n - keep] == 0.0)


def test_prefix_frac_shorthand_and_length_one():
    assert ds.load({"kind": "prefix_mask", "frac": 0.3}) == ds.PrefixMask(start_ratio=0.3, end_ratio=0.3)
    assert ds.load({"kind": "prefix_mask", "frac": 0.3}).weights(np.zeros(1)).tolist() == [1.0]
    assert ds.SuffixMask(frac=0.3).weights(np.zeros(1)).tolist() == [1.0]
    with pytest.raises(ScheduleError, match=r"either frac .* or start_ratio/end_ratio"):
        ds.load({"kind": "prefix_mask", "frac": 0.3, "start_ratio": 0.5})
    with pytest.raises(ScheduleError, match=r"frac must be a number in \(0, 1\]"):
        ds.load({"kind": "prefix_mask", "frac": 0.0})


@pytest.mark.parametrize("anneal", ["cosine", "linear"])
def test_annealed_ratio_at_first_mid_last_step(anneal):
    s = ds.PrefixWeight(start_ratio=0.3, end_ratio=1.0, anneal=anneal, multiplier=1.5)
    total = 101
    assert ds.anneal_progress(1, total) == 0.0
    assert ds.anneal_progress(51, total) == 0.5
    assert ds.anneal_progress(101, total) == 1.0
    assert ds.anneal_progress(500, total) == 1.0 and ds.anneal_progress(0, total) == 0.0  # clamped
    assert s.ratio_at(1, total) == pytest.approx(0.3)
    assert s.ratio_at(51, total) == pytest.approx(0.65)  # cosine and linear agree at the midpoint
    assert s.ratio_at(101, total) == pytest.approx(1.0)
    quarter = 0.5 * (1 - math.cos(math.pi * 0.25)) if anneal == "cosine" else 0.25
    assert s.ratio_at(26, total) == pytest.approx(0.3 + 0.7 * quarter)
    # total_steps <= 1: fully annealed, no step needed
    assert s.ratio_at(None, 1) == 1.0 and s.ratio_at(None, 0) == 1.0
    L = 20
    for step, keep in [(1, 6), (51, 13), (101, 20)]:
        w = s.weights(np.zeros(L), step=step, total_steps=total)
        assert (w == 1.5).sum() == keep and np.all(w[keep:] == 1.0)


def test_annealed_kinds_need_step_and_total():
    s = ds.PrefixMask()  # 0.3 -> 1.0
    assert s.needs_step
    with pytest.raises(ScheduleError, match="needs total_steps="):
        s.weights(np.zeros(5))
    with pytest.raises(ScheduleError, match="pass step="):
        s.weights(np.zeros(5), total_steps=10)
    assert s.weights(np.zeros(5), total_steps=1).sum() == 5  # fully annealed: ratio 1.0
    fixed = ds.PrefixWeight(start_ratio=0.3, end_ratio=0.3)
    assert not fixed.needs_step
    assert (fixed.weights(np.zeros(10)) == 1.5).sum() == 3


def test_prefix_weight_bounds_and_multiplier_check():
    w = ds.PrefixWeight(multiplier=2.0).weights(np.zeros((3, 30)), step=4, total_steps=9)
    assert set(np.unique(w)) <= {1.0, 2.0}
    assert np.all(np.diff(w, axis=1) <= 0)
    with pytest.raises(ScheduleError, match="multiplier must be a number >= 1"):
        ds.PrefixWeight(multiplier=0.5)


# ------------------------------------------------------------------------------------------ teacher_conf

def test_teacher_conf_matches_naive_loop(rng):
    adv, teacher, mask = batch(rng, B=5, L=30)
    for window, q, alpha, floor in [(64, 0.9, 1.0, 0.0), (4, 0.5, 0.7, 0.05), (1, 0.0, 2.0, 0.0)]:
        s = ds.TeacherConf(window=window, quantile=q, alpha=alpha, floor=floor)
        w = s.weights(adv, mask, teacher_logprob=teacher)
        for b in range(5):
            ref = naive_conf(list(teacher[b, mask[b]]), window, q, alpha, floor)
            np.testing.assert_allclose(w[b, mask[b]], ref, atol=1e-12)
            assert np.all((w[b, mask[b]] >= floor) & (w[b, mask[b]] <= 1.0))


def test_teacher_conf_window_is_strictly_before_t(rng):
    lp = -np.abs(rng.normal(1.0, 1.0, size=40))
    s = ds.TeacherConf(window=8)
    base = s.weights(np.zeros(40), teacher_logprob=lp)
    assert base[0] == 1.0  # empty window
    for t in [0, 5, 20, 39]:
        bumped = lp.copy()
        bumped[t] -= 10.0  # a very surprising token at t
        w = s.weights(np.zeros(40), teacher_logprob=bumped)
        assert np.array_equal(w[: t + 1], base[: t + 1])  # w_t does not see token t
        if t + 1 < 40:
            assert w[t + 1] < base[t + 1]
        if t + 9 < 40:
            assert w[t + 9] == base[t + 9]  # out of the window again


@pytest.mark.parametrize("n,k32,k64", [(20, 2, 1), (30, 3, 2), (10, 1, 1)])
def test_teacher_conf_k_rule_in_float32(n, k32, k64):
    assert max(1, math.floor((1 - 0.9) * n)) == k64  # the float64 reading would be one smaller
    s = ds.TeacherConf(window=64, quantile=0.9)
    assert int(s.top_k(torch.tensor([float(n)]))[0]) == k32
    # NLLs 10, 4, 1 then zeros: the mean of the top k differs between k = 1, 2, 3.
    nll = np.zeros(n + 1)
    nll[[0, 1, 2]] = [10.0, 4.0, 1.0]
    w = s.weights(np.zeros(n + 1), teacher_logprob=-nll)
    top = sorted(nll[:n], reverse=True)
    assert w[n] == pytest.approx(math.exp(-sum(top[:k32]) / k32), rel=1e-12)


def test_teacher_conf_needs_teacher_logprob():
    with pytest.raises(ScheduleError, match="teacher_logprob"):
        ds.TeacherConf().weights(np.zeros((2, 4)))


# ------------------------------------------------------------------------------ position-only kinds

def test_linear_and_pwopsd_shapes():
    L = 50
    lin = ds.Linear(gamma=0.5).weights(np.zeros(L))
    assert np.all(np.diff(lin) < 0) and lin[0] == 1.5 and np.all(lin > 1.0)
    pw = ds.Pwopsd().weights(np.zeros(L))
    assert np.all(np.diff(pw) > 0) and np.all((pw >= 0.25) & (pw <= 1.0))
    ref = naive_row({"kind": "pwopsd"}, [0.0] * L, [0.0] * L)
    np.testing.assert_allclose(pw, ref, atol=1e-12)


def test_fitted_normalizations(rng):
    adv, _, mask = batch(rng, B=4, L=25)
    for spec in [s for s in SAMPLES if s["kind"] == "fitted"] + [
        {"kind": "fitted", "family": "hinge", "params": {"a": 1, "b1": -0.5, "b2": 0.2, "x0": 0.4},
         "normalize": "max"},
        {"kind": "fitted", "family": "logistic", "params": {"a": 1, "x0": 0.5, "s": 0.1, "c": 0.2},
         "normalize": "none"},
    ]:
        w = ds.load(spec).weights(adv, mask)
        for b in range(4):
            ref = naive_row(spec, list(adv[b, mask[b]]), [])
            np.testing.assert_allclose(w[b, mask[b]], ref, atol=1e-12)
    w = ds.load(SAMPLES[13]).weights(adv, mask)  # mean normalization: each row averages exactly 1
    np.testing.assert_allclose([w[b, mask[b]].mean() for b in range(4)], 1.0, atol=1e-12)


def test_fitted_asks_the_curve_registry(rng):
    from drift.curves import FAMILIES

    assert ds.Fitted.summary.endswith(", ".join(FAMILIES))
    for name, fam in FAMILIES.items():  # every family, its positive parameters set to 0.5
        spec = ds.Fitted(family=name, params={p: 0.5 for p in fam.param_names}, normalize="none")
        assert tuple(spec.params) == fam.param_names
        for x in ("rel", "abs"):  # positions (t + 0.5)/L and t + 1 lie inside every family's domain (power: x > 0)
            w = ds.Fitted(family=name, params=spec.params, x=x, normalize="none").weights(np.ones((2, 7)))
            assert np.all(np.isfinite(np.asarray(w)))
    # a power law over relative position: defined at every token, the first one included
    adv, _, mask = batch(rng, B=3, L=12)
    spec = {"kind": "fitted", "family": "power", "params": {"a": 0.3, "b": 0.5, "c": 0.2}, "normalize": "max"}
    w = ds.load(spec).weights(adv, mask)
    for b in range(3):
        np.testing.assert_allclose(w[b, mask[b]], naive_row(spec, list(adv[b, mask[b]]), []), atol=1e-12)


def test_fitted_nonpositive_normalizer_is_an_error():
    s = ds.Fitted(family="linear", params={"a": -1.0, "b": 0.0})  # clipped to floor 0 everywhere
    with pytest.raises(ScheduleError, match="set floor > 0"):
        s.weights(np.zeros(5))


def test_vector_bins():
    w = ds.Vector(values=[2.0, 1.0, 0.5], x="abs", edges=[0, 3, 6, 9]).weights(np.zeros(12))
    assert w.tolist() == [2.0] * 3 + [1.0] * 3 + [0.5] * 6  # beyond the last edge: last value
    w = ds.Vector(values=[1.5, 1.0]).weights(np.zeros(4))  # centres 0.125, 0.375 | 0.625, 0.875
    assert w.tolist() == [1.5, 1.5, 1.0, 1.0]


def test_ideal_ratio_matches_naive_loop(rng):
    adv, _, mask = batch(rng, B=5, L=12)
    a = np.where(mask, adv, 0.0)
    for alpha, normalize, blend in [(1.0, False, None), (0.1, True, None), (0.5, True, 0.5)]:
        w = ds.IdealRatio(alpha=alpha, normalize=normalize, blend_gamma=blend).weights(adv, mask)
        # naive: per row, S_t over valid tokens; batch mean at the same position index t
        rows = []
        for b in range(5):
            vals, s_t = [], 0.0
            for x in a[b, mask[b]]:
                vals.append(math.exp(alpha * s_t))
                s_t += x
            rows.append(vals)
        if normalize:
            for t in range(12):
                col = [r[t] for r in rows if len(r) > t]
                for r in rows:
                    if len(r) > t:
                        r[t] /= sum(col) / len(col)
        for b in range(5):
            ref = [1 + blend * x for x in rows[b]] if blend is not None else rows[b]
            np.testing.assert_allclose(w[b, mask[b]], ref, rtol=1e-10)


def test_ideal_ratio_overflow_is_capped():
    a = torch.full((2, 200), 50.0)  # S_t up to ~1e4: exp would overflow
    w = ds.IdealRatio(alpha=1.0).weights(a)
    assert torch.isfinite(w).all() and w.dtype == torch.float32
    wn = ds.IdealRatio(alpha=1.0, normalize=True).weights(a.double())
    assert torch.allclose(wn, torch.ones_like(wn))  # identical rows normalize to 1 without overflow


# ------------------------------------------------------------------- padding, parity, input handling

@pytest.mark.parametrize("side", ["right", "left", "holes"])
@pytest.mark.parametrize("spec", [s for s in SAMPLES if s["kind"] not in NOT_PER_ROW], ids=[
    i for s, i in zip(SAMPLES, IDS, strict=True) if s["kind"] not in NOT_PER_ROW])
def test_every_kind_matches_naive_per_row_and_zero_padding(rng, spec, side):
    adv, teacher, mask = batch(rng, side=side)
    s = ds.load(spec)
    w = s.weights(adv, mask, teacher_logprob=teacher, **STEP)
    assert w.shape == adv.shape and w.dtype == np.float64
    assert np.all(w[~mask] == 0.0)  # the padding convention: 0 at every invalid position
    for b in range(adv.shape[0]):
        ref = naive_row(spec, list(adv[b, mask[b]]), list(teacher[b, mask[b]]), **{
            "step": STEP["step"], "total": STEP["total_steps"]})
        np.testing.assert_allclose(w[b, mask[b]], ref, atol=1e-12, err_msg=f"row {b}")


@pytest.mark.parametrize("spec", SAMPLES, ids=IDS)
def test_numpy_and_torch_agree_and_torch_has_no_grad(rng, spec):
    adv, teacher, mask = batch(rng)
    s = ds.load(spec)
    w_np = s.weights(adv, mask, teacher_logprob=teacher, **STEP)
    adv_t = torch.tensor(np.nan_to_num(adv), requires_grad=True)
    w_t = s.weights(adv_t, torch.tensor(mask, dtype=torch.int64), teacher_logprob=torch.tensor(teacher),
                    **STEP)
    assert isinstance(w_t, torch.Tensor) and w_t.dtype == torch.float64
    assert not w_t.requires_grad and w_t.grad_fn is None
    np.testing.assert_allclose(w_t.numpy(), w_np, atol=1e-12, rtol=0)
    w_32 = s.weights(adv_t.float(), torch.tensor(mask), teacher_logprob=torch.tensor(teacher).float(), **STEP)
    assert w_32.dtype == torch.float32 and not w_32.requires_grad
    # float32 inputs round the advantages, so only float32-level agreement is expected
    np.testing.assert_allclose(w_32.double().numpy(), w_np, rtol=1e-4, atol=1e-5)


def test_one_dimensional_input_and_default_mask():
    w = ds.IwOpd().weights([1.0, 1.0, 2.0])
    assert w.shape == (3,)
    w_t = ds.Linear().weights(torch.zeros(4))
    assert w_t.shape == (4,)


def test_bad_inputs_raise_schedule_error():
    s = ds.IwOpd()
    with pytest.raises(ScheduleError, match="mask must be bool or 0/1"):
        s.weights(np.zeros((2, 3)), np.full((2, 3), 0.5))
    with pytest.raises(ScheduleError, match="mask has shape"):
        s.weights(np.zeros((2, 3)), np.ones((2, 4)))
    with pytest.raises(ScheduleError, match="non-finite"):
        s.weights(np.array([[1.0, np.nan]]))
    with pytest.raises(ScheduleError, match="shape"):
        s.weights(np.zeros((2, 3, 4)))
    assert s.weights(np.array([[1.0, np.nan]]), np.array([[1, 0]])).tolist() == [[1.5, 0.0]]
    assert isinstance(ScheduleError("x"), DriftError)


# --------------------------------------------------------------------------------- specs and load()

@pytest.mark.parametrize("spec", SAMPLES, ids=IDS)
def test_json_round_trip_every_kind(spec, tmp_path):
    s = ds.load(spec)
    d = s.to_dict()
    assert d["kind"] == spec["kind"] and d["version"] == 1
    assert ds.load(d) == s
    assert ds.load(s.to_json()) == s
    assert ds.load(json.loads(json.dumps(d))) == s
    path = s.save(tmp_path / "sub" / "spec.json")
    assert ds.load(path) == s and ds.load(str(path)) == s
    assert isinstance(s, ds.Schedule)
    assert s.describe().startswith(spec["kind"])


def test_load_accepts_dict_text_path_and_schedule(tmp_path):
    spec = {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"}
    s = ds.load(spec)
    assert s == ds.IwOpd(gamma=0.5) and ds.load(s) is s
    assert ds.load(json.dumps(spec)) == s
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert ds.load(tmp_path / "s.json") == s
    (tmp_path / "bad.json").write_text('{"kind": "iw_opd",\n "gamma": }')
    with pytest.raises(InputFormatError, match=r"not valid JSON .line 2"):
        ds.load(tmp_path / "bad.json")
    with pytest.raises(InputFormatError, match="neither JSON text nor an existing file"):
        ds.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("spec,match", [
    ({"kind": "iw_opdd"}, r"unknown schedule kind 'iw_opdd'; valid kinds: \['uniform'"),
    ({"gamma": 0.5}, 'no "kind"'),
    ({"kind": "iw_opd", "gama": 0.5}, r"unknown parameter\(s\) \['gama'\].*valid parameters: \['gamma'"),
    ({"kind": "iw_opd", "gamma": -1}, "gamma must be a number >= 0, got -1"),
    ({"kind": "iw_opd", "gamma": "0.5"}, "gamma must be a number"),
    ({"kind": "iw_opd", "denominator": "both"}, r"denominator must be one of \['code', 'paper'\]"),
    ({"kind": "iw_opd", "use_abs": "yes"}, "use_abs must be true or false"),
    ({"kind": "iw_opd", "version": 2}, "version 2 is not supported"),
    ({"kind": "teacher_conf", "window": 2.5, "quantile": 1.5}, r"2 problem\(s\)(.|\n)*window(.|\n)*quantile"),
    ({"kind": "prefix_mask", "anneal": "exp"}, r"anneal must be one of \['cosine', 'linear'\]"),
    ({"kind": "prefix_mask", "start_ratio": 1.2}, r"start_ratio must be a number in \[0, 1\]"),
    ({"kind": "pwopsd", "s": 0}, "s must be a number > 0"),
    ({"kind": "fitted", "family": "exponential"}, r"needs parameter\(s\) \['params'\]"),
    ({"kind": "fitted", "family": "cubic", "params": {}}, "family must be one of"),
    ({"kind": "fitted", "family": "power", "params": {"a": 1}}, r"params for power must be exactly"),
    ({"kind": "fitted", "family": "exponential", "params": {"a": 1, "tau": 0, "c": 0}}, "tau"),
    ({"kind": "fitted", "family": "power", "params": {"a": 1, "b": 0, "c": 0}}, r"params\['b'\] must be a number > 0"),
    ({"kind": "fitted", "family": "logistic", "params": {"a": 1, "x0": 0.5, "s": -1, "c": 0}}, r"params\['s'\]"),
    ({"kind": "vector", "values": [1, 2], "x": "abs"}, "x='abs' needs edges"),
    ({"kind": "vector", "values": [1, 2], "edges": [0, 0.5, 0.4]}, "strictly increasing"),
    ({"kind": "vector", "values": [1, -2]}, r"values\[1\] must be a number >= 0"),
    ({"kind": "ideal_ratio", "normalize": "mean"}, "normalize must be true or false"),
])
def test_bad_specs_raise_helpful_errors(spec, match):
    with pytest.raises(ScheduleError, match=match):
        ds.load(spec)


def test_registry_and_protocol():
    assert set(ds.KINDS) == {"uniform", "prefix_mask", "suffix_mask", "prefix_weight", "linear", "iw_opd",
                            "teacher_conf", "ideal_ratio", "pwopsd", "fitted", "vector", "shuffled"}
    assert {d["kind"] for d in SAMPLES} == set(ds.KINDS)
    for cls in ds.KINDS.values():
        assert cls.summary and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        ds.IwOpd().gamma = 1.0  # type: ignore[misc]
