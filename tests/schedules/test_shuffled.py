"""The shuffled negative control: per-row multisets, padding, determinism, and that position information is gone.

The calibration test uses the exact permutation distribution of Pearson's r: for a uniformly random permutation of
n distinct values against positions 0..n-1, E[r] = 0 and Var[r] = 1/(n - 1), so z = r·sqrt(n - 1) has mean 0 and
variance 1 over rows. The unshuffled base (r = -1 in every row) fails the same test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import drift.schedules as ds
from drift.errors import ScheduleError

LINEAR = {"kind": "linear", "gamma": 1.0}
IW = {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"}


def _batch(rng: np.random.Generator, B: int, L: int, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(1, L + 1, size=B)
    lengths[0] = L
    mask = np.zeros((B, L), dtype=bool)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = True
        elif side == "left":
            mask[b, L - n:] = True
        else:
            mask[b, np.sort(rng.choice(L, size=n, replace=False))] = True
    adv = rng.normal(-0.3, 1.0, size=(B, L))
    return adv, mask


@pytest.mark.parametrize("base", [LINEAR, IW, {"kind": "prefix_mask", "frac": 0.3}, {"kind": "suffix_mask"}])
@pytest.mark.parametrize("side", ["right", "left", "holes"])
def test_same_multiset_per_row_and_zero_padding(rng, base, side):
    adv, mask = _batch(rng, 16, 23, side)
    w_base = ds.load(base).weights(adv, mask, step=5, total_steps=10)
    w = ds.load({"kind": "shuffled", "base": base, "seed": 1}).weights(adv, mask, step=5, total_steps=10)
    assert np.all(w[~mask] == 0.0)  # masked positions untouched: 0, as for every kind
    for b in range(len(adv)):
        np.testing.assert_array_equal(np.sort(w[b, mask[b]]), np.sort(w_base[b, mask[b]]), err_msg=f"row {b}")
    assert not np.array_equal(w, w_base)  # something moved


def test_permutation_follows_valid_tokens_whatever_the_padding(rng):
    adv, mask = _batch(rng, 8, 17, "holes")
    s = ds.load({"kind": "shuffled", "base": IW, "seed": 2})
    w_holes = s.weights(adv, mask, step=4)
    right_adv, right_mask = np.zeros_like(adv), np.zeros_like(mask)
    for b in range(len(adv)):  # the same valid tokens, right-padded
        n = int(mask[b].sum())
        right_adv[b, :n], right_mask[b, :n] = adv[b, mask[b]], True
    w_right = s.weights(right_adv, right_mask, step=4)
    for b in range(len(adv)):
        np.testing.assert_array_equal(w_holes[b, mask[b]], w_right[b, right_mask[b]])


def test_deterministic_from_seed_step_and_row(rng):
    adv, mask = _batch(rng, 6, 20)
    s = ds.load({"kind": "shuffled", "base": LINEAR, "seed": 0})
    w = s.weights(adv, mask, step=7)
    np.testing.assert_array_equal(w, s.weights(adv.copy(), mask.copy(), step=7))  # same call, same weights
    np.testing.assert_array_equal(w, ds.load(s.to_dict()).weights(adv, mask, step=7))  # spec round trip
    assert not np.array_equal(w, s.weights(adv, mask, step=8))  # another step, another permutation
    assert not np.array_equal(w, ds.load({"kind": "shuffled", "base": LINEAR, "seed": 1}).weights(adv, mask, step=7))
    np.testing.assert_array_equal(s.weights(adv, mask), s.weights(adv, mask, step=0))  # no step = step 0
    # row b's permutation depends on (seed, step, b) only, not on the other rows of the batch
    np.testing.assert_array_equal(s.weights(adv[:2], mask[:2], step=7), w[:2])
    other = adv.copy()
    other[1:] = rng.normal(size=other[1:].shape)
    np.testing.assert_array_equal(s.weights(other, mask, step=7)[0], w[0])
    # the same rows in torch: same weights, no grad
    w_t = s.weights(torch.tensor(adv, requires_grad=True), torch.tensor(mask), step=7)
    assert not w_t.requires_grad
    np.testing.assert_array_equal(w_t.numpy(), w)


def test_position_correlation_is_destroyed():
    rng = np.random.default_rng(11)
    R, L = 3000, 24
    adv, mask = _batch(rng, R, L)
    keep = mask.sum(1) >= 4  # rows long enough for a correlation
    pos = np.arange(L, dtype=float)

    def z_scores(w: np.ndarray) -> np.ndarray:
        z = []
        for b in np.flatnonzero(keep):
            n = int(mask[b].sum())
            r = np.corrcoef(pos[:n], w[b, :n])[0, 1]
            z.append(r * np.sqrt(n - 1))
        return np.asarray(z)

    base = ds.load(LINEAR).weights(adv, mask)
    z_base = z_scores(base)
    assert np.all(z_base < 0) and abs(z_base.mean()) > 3  # the base is all position: r = -1 in every row
    for seed in (0, 1):
        z = z_scores(ds.load({"kind": "shuffled", "base": LINEAR, "seed": seed}).weights(adv, mask, step=3))
        n = len(z)
        assert abs(z.mean()) < 4 / np.sqrt(n), z.mean()  # E[r] = 0
        assert 0.85 < z.var(ddof=1) < 1.15, z.var(ddof=1)  # Var[r] = 1/(n-1): a uniform permutation
    # the mean weight per position is flat: each position's weight is uniform over its row's values
    full = mask.sum(1) == L
    w = ds.load({"kind": "shuffled", "base": LINEAR, "seed": 0}).weights(adv[full], mask[full], step=3)
    sd = float(np.std(base[full][0], ddof=0))
    se = sd / np.sqrt(full.sum())
    assert np.max(np.abs(w.mean(0) - w.mean())) < 4.5 * se
    assert np.max(np.abs(base[full].mean(0) - base[full].mean())) > 10 * se  # the base is not flat


def test_step_needs_and_teacher_needs_come_from_the_base(rng):
    annealed = {"kind": "prefix_mask", "start_ratio": 0.2, "end_ratio": 0.9}
    assert ds.load({"kind": "shuffled", "base": annealed}).needs_step
    assert not ds.load({"kind": "shuffled", "base": LINEAR}).needs_step
    s = ds.load({"kind": "shuffled", "base": {"kind": "teacher_conf"}})
    with pytest.raises(ScheduleError, match="teacher_logprob"):
        s.weights(np.zeros((2, 4)))
    with pytest.raises(ScheduleError, match="non-finite"):
        ds.load({"kind": "shuffled", "base": IW}).weights(np.array([[1.0, np.nan]]))


@pytest.mark.parametrize(("spec", "match"), [
    ({"kind": "shuffled"}, r"needs parameter\(s\) \['base'\]"),
    ({"kind": "shuffled", "base": "uniform"}, "base must be a schedule spec"),
    ({"kind": "shuffled", "base": {"kind": "shuffled", "base": LINEAR}}, "shuffling twice is one shuffle"),
    ({"kind": "shuffled", "base": {"kind": "linear", "gamma": -1}}, "base: invalid 'linear'.*gamma must be"),
    ({"kind": "shuffled", "base": LINEAR, "seed": 1.5}, "seed must be an integer >= 0"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ScheduleError, match=match):
        ds.load(spec)


def test_spec_is_canonical_and_exports_refuse_with_a_sentence():
    s = ds.load({"kind": "shuffled", "base": {"kind": "iw_opd"}})
    assert s.base == ds.IwOpd().to_dict() and s.seed == 0  # every base parameter explicit
    assert s == ds.load({"kind": "shuffled", "base": IW, "seed": 0})
    assert ds.export(s, "json").config == s.to_dict()
    for target in ("verl", "trl", "tinker"):
        with pytest.raises(ScheduleError, match="negative control"):
            ds.export(s, target)
    assert s.describe().startswith("shuffled: w_t = [iw_opd")
