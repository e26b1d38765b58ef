"""Exports: knob values, round trips, no-equivalent errors, rendering, and parity with the fork's formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import drift.schedules as ds
from drift.errors import ScheduleError
from drift.schedules.export import VERL_GROUP

VERL_MAPPABLE = [
    ds.Uniform(),
    ds.IwOpd(gamma=0.5),
    ds.IwOpd(gamma=0.3, use_abs=False),
    ds.PrefixWeight(),
    ds.PrefixWeight(start_ratio=0.3, end_ratio=0.3, multiplier=1.5),
    ds.PrefixWeight(start_ratio=0.1, end_ratio=0.8, anneal="linear", multiplier=2.0, min_tokens=5),
    ds.load({"kind": "prefix_mask", "frac": 0.3}),
    ds.PrefixMask(start_ratio=0.2, end_ratio=0.9, anneal="linear", min_tokens=4),
    ds.TeacherConf(),
    ds.TeacherConf(window=32, quantile=0.8, alpha=2.0, floor=0.05),
]
TRL_MAPPABLE = [ds.Uniform(), ds.IwOpd(gamma=0.5), ds.IwOpd(gamma=0.25, epsilon=1e-6)]
UNMAPPABLE_VERL = [
    ds.SuffixMask(frac=0.3), ds.Linear(), ds.Pwopsd(), ds.IdealRatio(alpha=0.01),
    ds.Fitted(family="linear", params={"a": 1.5, "b": -0.5}), ds.Vector(values=[1.5, 1.0]),
]


def _ids(items):
    return [s.kind + "-" + str(i) for i, s in enumerate(items)]


# --------------------------------------------------------------------------------------------- verl

def test_verl_iw_opd_knobs():
    r = ds.export({"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"}, "verl")
    assert r.exact and r.target == "verl"
    c = r.config
    assert c["iw_opd_weight_enable"] is True and c["iw_opd_weight_max"] == 1.5
    assert c["iw_opd_weight_use_abs"] is True
    assert c["only_reverse_kl_advantages"] is True and c["lambda_vals"] == 1.0
    assert [c[k] for k in ("opd_prefix_weight_enable", "opd_prefix_mask_enable",
                           "teacher_prefix_conf_weight")] == [False, False, False]
    assert any("only_reverse_kl_advantages" in n for n in r.notes)


@pytest.mark.parametrize("s", VERL_MAPPABLE, ids=_ids(VERL_MAPPABLE))
def test_verl_round_trip_and_one_enable(s):
    r = ds.export(s, "verl")
    assert r.exact
    enables = [r.config[k] for k in ("iw_opd_weight_enable", "opd_prefix_weight_enable",
                                     "opd_prefix_mask_enable")]
    assert sum(enables) <= 1
    assert ds.from_verl(r.config) == s
    # The rendered Hydra overrides parse back too (strings, prefixed keys).
    text = ds.format_export(r, "overrides")
    pairs = dict(line.split("=", 1) for line in text.splitlines())
    assert all(k.startswith(VERL_GROUP + ".") for k in pairs)
    assert ds.from_verl(pairs) == s


@pytest.mark.parametrize("s", UNMAPPABLE_VERL, ids=_ids(UNMAPPABLE_VERL))
def test_verl_no_equivalent(s):
    with pytest.raises(ScheduleError, match=f"{s.kind} has no equivalent in verl's IW-OPD fork.*'json'"):
        ds.export(s, "verl")


def test_verl_suffix_mask_message_is_plain():
    with pytest.raises(ScheduleError, match="suffix_mask has no equivalent in verl's IW-OPD fork: it only "
                                            "masks prefixes"):
        ds.export(ds.SuffixMask(), "verl")


def test_verl_paper_denominator_is_approximate_only_on_request():
    paper = ds.IwOpd(gamma=0.5, denominator="paper")
    with pytest.raises(ScheduleError, match=r"no exact equivalent in verl's IW-OPD fork.*allow_approximate"):
        ds.export(paper, "verl")
    r = ds.export(paper, "verl", allow_approximate=True)
    assert not r.exact and r.config["iw_opd_weight_max"] == 1.5
    assert any(n.startswith("APPROXIMATE") and "paper" in n for n in r.notes)
    with pytest.raises(ScheduleError, match="eps = 1e-8"):
        ds.export(ds.IwOpd(epsilon=1e-6), "verl")


@pytest.mark.parametrize("cfg,match", [
    ({"iw_opd_weight_enable": True, "opd_prefix_mask_enable": True}, "at most one of"),
    ({"iw_opd_weight_enable": True, "lambda_vals": 1.25}, "lambda_vals=1.25 is G-OPD/ExOPD"),
    ({"only_reverse_kl_advantages": False}, "only_reverse_kl_advantages=False"),
    ({"iw_opd_weight_maxx": 1.5}, r"unknown verl weighting knob\(s\) \['iw_opd_weight_maxx'\]"),
    ({"iw_opd_weight_enable": True, "iw_opd_weight_max": 0.9}, "must be >= 1.0"),
    ({"iw_opd_weight_enable": "maybe"}, "must be true or false"),
])
def test_from_verl_errors(cfg, match):
    with pytest.raises(ScheduleError, match=match):
        ds.from_verl(cfg)


def test_from_verl_defaults_and_unrelated_keys():
    assert ds.from_verl({"clip_ratio": 0.2, "loss_agg_mode": "token-mean"}) == ds.Uniform()
    assert ds.from_verl({"iw_opd_weight_enable": True}) == ds.IwOpd(gamma=0.5)
    assert ds.from_verl({"+actor_rollout_ref.actor.policy_loss.opd_prefix_weight_enable": "true"}) == \
        ds.PrefixWeight()
    assert ds.from_verl({"teacher_prefix_conf_weight": True}) == ds.TeacherConf()


# ----------------------------------------------------------- parity with the fork's formulas (verl)

def _verl_factor(cfg: dict, ref_lp, old_lp, mask, step: int, total: int) -> torch.Tensor:
    """What the fork multiplies the advantage by, written from PAPER §5.2/5.4-5.6 in float32 torch."""
    m = mask.float()
    L = m.shape[1]
    adv = ref_lp - old_lp
    pos = torch.arange(L).unsqueeze(0)
    if cfg["iw_opd_weight_enable"]:
        p = (adv.abs() if cfg["iw_opd_weight_use_abs"] else adv) * m
        frac_prev = (p.cumsum(-1) - p) / (p.sum(-1, keepdim=True) + 1e-8)
        return 1.0 + (cfg["iw_opd_weight_max"] - 1.0) * (1.0 - frac_prev).clamp(0.0, 1.0) * m
    for group in ("opd_prefix_weight", "opd_prefix_mask"):
        if cfg[f"{group}_enable"]:
            prog = 1.0 if total <= 1 else min(max((step - 1) / (total - 1), 0.0), 1.0)
            a = 0.5 * (1.0 - math.cos(math.pi * prog)) if cfg[f"{group}_schedule"] == "cosine" else prog
            start, end = cfg[f"{group}_start_ratio"], cfg[f"{group}_end_ratio"]
            ratio = min(max(start + (end - start) * a, 0.0), 1.0)
            n = m.sum(-1)
            keep = torch.minimum(torch.ceil(n * ratio).long().clamp(min=cfg[f"{group}_min_tokens"]), n.long())
            hit = (pos < keep.unsqueeze(-1)).float() * m
            return 1.0 + (cfg[f"{group}_multiplier"] - 1.0) * hit if group == "opd_prefix_weight" else hit
    if cfg["teacher_prefix_conf_weight"]:
        W, q = cfg["teacher_prefix_conf_window"], cfg["teacher_prefix_conf_quantile"]
        nll = -ref_lp * m
        out = torch.ones_like(nll)
        for b in range(nll.shape[0]):
            for t in range(L):
                lo = max(0, t - W)
                vals = [float(nll[b, j]) for j in range(lo, t) if m[b, j] > 0]
                if not vals:
                    continue
                k = max(1, int((1.0 - q) * torch.tensor(float(len(vals)))))  # float32 product
                Q = sum(sorted(vals, reverse=True)[:k]) / k
                out[b, t] = max(math.exp(-cfg["teacher_prefix_conf_alpha"] * Q),
                                cfg["teacher_prefix_conf_weight_min"])
        return out * m
    return torch.ones_like(m)


@pytest.mark.parametrize("s", VERL_MAPPABLE, ids=_ids(VERL_MAPPABLE))
def test_exported_verl_knobs_reproduce_drift_weights(s, rng):
    B, L = 6, 90
    lengths = np.r_[L, 1, 50, rng.integers(2, L, size=B - 3)]
    mask = torch.tensor(np.arange(L)[None, :] < lengths[:, None])  # right padding, verl's layout
    ref_lp = torch.tensor(-np.abs(rng.normal(1.0, 1.0, (B, L))), dtype=torch.float32)
    old_lp = torch.tensor(-np.abs(rng.normal(1.0, 1.0, (B, L))), dtype=torch.float32)
    cfg = ds.export(s, "verl").config
    for step, total in [(1, 40), (17, 40), (40, 40), (3, 1)]:
        want = _verl_factor(cfg, ref_lp, old_lp, mask, step, total)
        got = s.weights(ref_lp - old_lp, mask, teacher_logprob=ref_lp, step=step, total_steps=total)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- trl

@pytest.mark.parametrize("s", TRL_MAPPABLE, ids=_ids(TRL_MAPPABLE))
def test_trl_round_trip(s):
    r = ds.export(s, "trl")
    assert r.exact and r.config["distillation_objective"] == "iw_opd" and r.config["lmbda"] == 1.0
    assert ds.from_trl(r.config) == s


def test_trl_knobs_and_no_equivalents():
    assert ds.export(ds.IwOpd(gamma=0.5), "trl").config["iw_opd_gamma"] == 0.5
    assert ds.export(ds.Uniform(), "trl").config["iw_opd_gamma"] == 0.0
    with pytest.raises(ScheduleError, match="iw_opd has no equivalent in TRL's IWOPDConfig: TRL always "
                                            r"accumulates \|A_t\|"):
        ds.export(ds.IwOpd(use_abs=False), "trl")
    with pytest.raises(ScheduleError, match="prefix_mask has no equivalent in TRL's IWOPDConfig: it has no "
                                            "masks"):
        ds.export({"kind": "prefix_mask", "frac": 0.3}, "trl")
    for s in [ds.PrefixWeight(), ds.TeacherConf(), ds.Linear(), *UNMAPPABLE_VERL]:
        with pytest.raises(ScheduleError, match="no equivalent in TRL"):
            ds.export(s, "trl")
    r = ds.export(ds.IwOpd(denominator="paper"), "trl", allow_approximate=True)
    assert not r.exact


def test_from_trl_errors():
    with pytest.raises(ScheduleError, match="is not IW-OPD"):
        ds.from_trl({"distillation_objective": "gkd"})
    with pytest.raises(ScheduleError, match=r"lmbda=0.5"):
        ds.from_trl({"iw_opd_gamma": 0.5, "lmbda": 0.5})


# ------------------------------------------------------------------------------------ tinker, json

def test_tinker_only_uniform():
    r = ds.export(ds.Uniform(), "tinker")
    assert r.config == {"kl_penalty_coef": 1.0, "kl_discount_factor": 0.0}
    assert ds.from_tinker(r.config) == ds.Uniform()
    for s in [ds.IwOpd(), *VERL_MAPPABLE[3:], *UNMAPPABLE_VERL]:
        with pytest.raises(ScheduleError, match=r"no equivalent in tinker-cookbook.*only uniform maps"):
            ds.export(s, "tinker")
    with pytest.raises(ScheduleError, match="not a per-token weight"):
        ds.from_tinker({"kl_penalty_coef": 1.0, "kl_discount_factor": 0.9})


@pytest.mark.parametrize("s", VERL_MAPPABLE + UNMAPPABLE_VERL, ids=_ids(VERL_MAPPABLE + UNMAPPABLE_VERL))
def test_json_round_trip(s):
    r = ds.export(s, "json")
    assert r.exact and r.config["kind"] == s.kind
    assert ds.load(r.config) == s
    assert ds.load(ds.format_export(r)) == s  # default style for json is JSON text


def test_unknown_target_and_style():
    with pytest.raises(ScheduleError, match="unknown export target 'deepspeed'"):
        ds.export(ds.Uniform(), "deepspeed")
    with pytest.raises(ScheduleError, match="unknown export style 'toml'"):
        ds.format_export(ds.export(ds.Uniform(), "verl"), "toml")


# ------------------------------------------------------------------------------------------- render

def test_format_export_styles():
    r = ds.export(ds.IwOpd(gamma=0.5), "verl")
    overrides = ds.format_export(r)
    assert f"{VERL_GROUP}.iw_opd_weight_max=1.5" in overrides.splitlines()
    assert f"{VERL_GROUP}.iw_opd_weight_enable=true" in overrides.splitlines()
    yaml = ds.format_export(r, "yaml")
    assert "iw_opd_weight_max: 1.5" in yaml.splitlines() and yaml.startswith("# " + VERL_GROUP)
    assert json.loads(ds.format_export(r, "json")) == r.config
    kw = ds.format_export(ds.export(ds.IwOpd(gamma=0.5), "trl"))
    assert kw.splitlines()[0] == "IWOPDConfig(" and "    iw_opd_gamma=0.5," in kw.splitlines()
    assert "    distillation_objective='iw_opd'," in kw.splitlines()
    tinker = ds.format_export(ds.export(ds.Uniform(), "tinker"))
    assert tinker.splitlines() == ["kl_penalty_coef=1.0", "kl_discount_factor=0.0"]
    fitted = ds.export(ds.Fitted(family="linear", params={"a": 1.5, "b": -0.5}, source={"fit": {"r2": 0.9}}),
                      "json")
    ytext = ds.format_export(fitted, "yaml")
    assert "params:" in ytext and "  a: 1.5" in ytext and "    r2: 0.9" in ytext
    assert r.to_dict()["target"] == "verl"
