"""Per-token drift metrics: pure, masked, unreduced functions.

Two kinds live here.

*Sampled-token metrics* need only the log-probabilities of the realized tokens, shape ``(B, L)`` with a validity
``mask_B_L`` (1 = a response token). They follow the paper's notation (t is 0-based, sums are *exclusive*):

- advantage        A_t  = log pi_T(y_t) - log pi_S(y_t)
- k1               k1_t = log pi_S(y_t) - log pi_T(y_t) = -A_t
- k3               d = clamp(A_t, -20, 20);  k3_t = min(exp(d) - d - 1, 10)      (verl ``low_var_kl``)
- prefix log-ratio S_t  = sum_{k<t} A_k
- cumulative gap   C_t  = sum_{k<t} |A_k|,   C_t / sum_{all k} |A_k|  (0 when the total is 0)

*Full-vocabulary metrics* reduce one chunk of logits ``(C, V)`` of both models to per-token numbers
(:func:`vocab_stats`): log-probs of the realized token, entropies, KL in both directions, teacher rank of the
realized token, argmaxes, top-k overlap and the teacher's mass on the student's top-k. Callers feed chunks of
positions so memory stays O(C x V); a chunk's logits are reduced immediately and never kept. Top-k sets and argmaxes
rank ids by logit and break ties toward the *lower token id* (the order of a stable descending sort, and
``torch.argmax``'s first maximum), so they are defined even where logits tie, as bfloat16 logits often do.

Invalid (masked) positions return 0 for every metric; reductions over tokens are the caller's business.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "K3_CLAMP",
    "K3_MAX",
    "advantage",
    "cum_abs_gap",
    "cum_abs_gap_frac",
    "exclusive_cumsum",
    "k1",
    "k3",
    "prefix_logratio",
    "vocab_stats",
    "vocab_stats_",
    "vocab_stats_tiled",
]

K3_CLAMP = 20.0  # |A_t| clamp before the exponential (verl low_var_kl)
K3_MAX = 10.0  # upper clamp of k3
_TOPK_BLOCK = 64  # block width of the block-maxima top-k
_I64_MAX = torch.iinfo(torch.int64).max
_I64_MIN = torch.iinfo(torch.int64).min

LogitsFn = Callable[[int, int, Tensor], Tensor]


def _m(mask_B_L: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones_like(like) if mask_B_L is None else mask_B_L.to(like.dtype)


def advantage(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """OPD advantage A_t = log pi_T(y_t) - log pi_S(y_t); 0 at masked positions."""
    return (teacher_lp_B_L - student_lp_B_L) * _m(mask_B_L, student_lp_B_L)


def k1(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """k1_t = log pi_S(y_t) - log pi_T(y_t): unbiased single-sample estimate of KL(pi_S || pi_T) when y ~ pi_S."""
    return (student_lp_B_L - teacher_lp_B_L) * _m(mask_B_L, student_lp_B_L)


def k3(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """k3_t = min(exp(d) - d - 1, 10) with d = clamp(log pi_T(y_t) - log pi_S(y_t), -20, 20). Non-negative."""
    d = (teacher_lp_B_L - student_lp_B_L).clamp(-K3_CLAMP, K3_CLAMP)
    return (torch.expm1(d) - d).clamp(min=0.0, max=K3_MAX) * _m(mask_B_L, student_lp_B_L)


def exclusive_cumsum(x_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """out_t = sum_{k<t} x_k over valid positions (float64 accumulation); 0 at masked positions."""
    m = _m(mask_B_L, x_B_L).to(torch.float64)
    xm = x_B_L.to(torch.float64) * m
    return (torch.cumsum(xm, dim=-1) - xm) * m


def prefix_logratio(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """S_t = sum_{k<t} A_k = log pi_T(y_<t) - log pi_S(y_<t) (exclusive; float64)."""
    return exclusive_cumsum(advantage(student_lp_B_L, teacher_lp_B_L, mask_B_L), mask_B_L)


def cum_abs_gap(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """C_t = sum_{k<t} |A_k| (exclusive; float64)."""
    return exclusive_cumsum(advantage(student_lp_B_L, teacher_lp_B_L, mask_B_L).abs(), mask_B_L)


def cum_abs_gap_frac(student_lp_B_L: Tensor, teacher_lp_B_L: Tensor, mask_B_L: Tensor | None = None) -> Tensor:
    """F_t = C_t / sum_{all valid k} |A_k| (IW-OPD code convention, no epsilon); 0 where the total is 0."""
    a = advantage(student_lp_B_L, teacher_lp_B_L, mask_B_L).abs().to(torch.float64)
    total = a.sum(dim=-1, keepdim=True)
    c = exclusive_cumsum(a, mask_B_L)
    return torch.where(total > 0, c / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(c))


def vocab_stats(student_logits_C_V: Tensor, teacher_logits_C_V: Tensor, targets_C: Tensor, *,
                topk: int = 16) -> dict[str, Tensor]:
    """Reduce one chunk of logits of both models to per-token full-vocabulary metrics (float32).

    With p = softmax(student), q = softmax(teacher), y = the realized token:

    - ``student_logprob`` = log p(y), ``teacher_logprob`` = log q(y)
    - ``student_entropy`` = -sum_v p log p, ``teacher_entropy`` = -sum_v q log q
    - ``kl_reverse`` = KL(p || q) = sum_v p (log p - log q), ``kl_forward`` = KL(q || p)
    - ``teacher_rank`` = #{v : q_v > q_y} (0 = y is a teacher argmax; ties favour y)
    - ``student_argmax``, ``teacher_argmax``; ``topk_overlap`` = |topk(p) ∩ topk(q)| / k
    - ``teacher_mass_student_topk`` = sum_{v in topk(p)} q_v, the teacher's probability on the student's top k

    topk(.) is the k ids of largest logit, ties toward the lower id; an argmax is the lowest id of largest logit.

    Args:
        student_logits_C_V: student logits for C positions (any float dtype; computed in float32).
        teacher_logits_C_V: teacher logits for the same positions, same vocabulary width V.
        targets_C: realized token ids.
        topk: k for the top-k overlap and the teacher's mass on the student's top k (clamped to V).

    Returns:
        A dict of (C,) tensors (float32, except int ranks/argmaxes).
    """
    if student_logits_C_V.shape != teacher_logits_C_V.shape:
        raise ValueError(f"logit shapes differ: {tuple(student_logits_C_V.shape)} vs "
                         f"{tuple(teacher_logits_C_V.shape)}; slice both to the shared vocabulary first")
    stacked = torch.stack((student_logits_C_V, teacher_logits_C_V))
    return vocab_stats_(stacked if stacked.dtype == torch.float64 else stacked.float(), targets_C, topk=topk)


def vocab_stats_(logits_2_C_V: Tensor, targets_C: Tensor, *, topk: int = 16,
                 probs_2_C_V: Tensor | None = None) -> dict[str, Tensor]:
    """In-place core of :func:`vocab_stats`: ``logits_2_C_V[0]`` student, ``[1]`` teacher, float32.

    Overwrites ``logits_2_C_V`` with log-probabilities (and ``probs_2_C_V``, a reusable buffer of the same shape,
    with probabilities) so a caller that loops over chunks allocates nothing per chunk. The four sums
    sum_v {p, q} x {log p, log q} are one batched matrix product, so each (C, V) array is read once.
    """
    _, c, v = logits_2_C_V.shape
    k = max(1, min(int(topk), v))
    # the top k by logit, before the in-place log-softmax (its rounding could merge distinct logits into ties)
    top_val, top_idx = _tile_topk(logits_2_C_V, k)
    logp = torch.log_softmax(logits_2_C_V, dim=-1, out=logits_2_C_V)
    probs = torch.exp(logp, out=probs_2_C_V) if probs_2_C_V is not None else logp.exp()
    # dots[i, a, b] = sum_v probs[a, i, v] * logp[b, i, v]
    dots_C_2_2 = torch.bmm(probs.transpose(0, 1), logp.permute(1, 2, 0))
    s_neg_h, s_cross = dots_C_2_2[:, 0, 0], dots_C_2_2[:, 0, 1]  # sum p log p, sum p log q
    t_cross, t_neg_h = dots_C_2_2[:, 1, 0], dots_C_2_2[:, 1, 1]  # sum q log p, sum q log q
    tgt = targets_C.long().view(c, 1)
    s_lp = logp[0].gather(1, tgt).squeeze(1)
    t_lp = logp[1].gather(1, tgt).squeeze(1)
    s_top, t_top = top_idx[0], top_idx[1]
    overlap = (s_top.unsqueeze(2) == t_top.unsqueeze(1)).any(dim=2).sum(dim=1).float() / k
    mass = probs[1].gather(1, s_top).sum(dim=1).clamp(max=1.0)
    rank = (logp[1] > t_lp.unsqueeze(1)).sum(dim=1)
    argmax = _argmax_lowest_id(top_val, top_idx)
    return {
        "student_logprob": s_lp,
        "teacher_logprob": t_lp,
        "student_entropy": (-s_neg_h).clamp_min(0.0),
        "teacher_entropy": (-t_neg_h).clamp_min(0.0),
        # KL >= 0 exactly; identical rows give exactly 0, tiny negative rounding is clamped.
        "kl_reverse": (s_neg_h - s_cross).clamp_min(0.0),
        "kl_forward": (t_neg_h - t_cross).clamp_min(0.0),
        "teacher_rank": rank.to(torch.int32),
        "student_argmax": argmax[0],
        "teacher_argmax": argmax[1],
        "topk_overlap": overlap,
        "teacher_mass_student_topk": mass,
    }


def _select_lowest_id(vals_X_N: Tensor, ids_X_N: Tensor, k: int) -> Tensor:
    """Positions (..., k) along the last axis of the k entries of largest value, ties toward the lowest id.

    With tau the k-th largest value, the selection is every entry above tau (fewer than k) and the lowest-id
    entries equal to tau: one top-k of the values finds tau, a second top-k of an integer score (above tau: the
    maximum; at tau: -id; below: the minimum) picks the entries. Exact for any float dtype; order unspecified.
    """
    kth = torch.topk(vals_X_N, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    score = torch.where(vals_X_N == kth, -ids_X_N, _I64_MIN)
    score = score.masked_fill_(vals_X_N > kth, _I64_MAX)
    return torch.topk(score, k, dim=-1, sorted=False).indices


def _topk_ties_low(vals_X_N: Tensor, ids_X_N: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Values and positions (..., k) of :func:`_select_lowest_id` at the cost of one top-k in the common case.

    The choice among tied entries matters only where a tie crosses the k-th place, i.e. where more than k entries
    are >= the k-th largest value; only those rows are redone by the exact selection (many in bfloat16 tiles, few in
    float32 ones). (One top-k of k, not k + 1: PyTorch's CPU top-k is several times slower beyond k = n / 64.)
    """
    n = vals_X_N.shape[-1]
    if k >= n:
        return vals_X_N.clone(), torch.arange(n, device=vals_X_N.device).expand_as(vals_X_N)  # (callers overwrite)
    top, pos = torch.topk(vals_X_N, k, dim=-1, sorted=False)
    cut = (vals_X_N >= top.amin(dim=-1, keepdim=True)).sum(dim=-1) > k
    if bool(cut.any()):
        rows = cut.nonzero(as_tuple=True)
        fixed = _select_lowest_id(vals_X_N[rows], ids_X_N[rows], k)
        pos[rows] = fixed
        top[rows] = vals_X_N[rows].gather(-1, fixed)
    return top, pos


def _tile_topk(x_2_P_W: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k along the last axis, ties toward the lower index (unsorted): values and indices (2, P, k).

    Wide rows go through block maxima: blocks of 64 ids ranked by (maximum, then lower block), and the k best
    blocks hold the k best ids (each better block's best id beats every id of a worse block), so only k x 64
    values are searched (much faster than a top-k over the whole row).
    """
    width = x_2_P_W.shape[-1]
    n_blocks = width // _TOPK_BLOCK
    if n_blocks < 2 * k or width % _TOPK_BLOCK:
        return _topk_ties_low(x_2_P_W, torch.arange(width, device=x_2_P_W.device).expand_as(x_2_P_W), k)
    block_max = x_2_P_W.reshape(*x_2_P_W.shape[:-1], n_blocks, _TOPK_BLOCK).amax(dim=-1)
    _, best = _topk_ties_low(block_max, torch.arange(n_blocks, device=x_2_P_W.device).expand_as(block_max), k)
    cols = (best.unsqueeze(-1) * _TOPK_BLOCK + torch.arange(_TOPK_BLOCK, device=x_2_P_W.device)).flatten(-2)
    top, pos = _topk_ties_low(x_2_P_W.gather(-1, cols), cols, k)
    return top, cols.gather(-1, pos)


def _argmax_lowest_id(top_val_2_P_K: Tensor, top_idx_2_P_K: Tensor) -> Tensor:
    """The lowest id of largest value among top-k lists (any order): (2, P)."""
    best = top_val_2_P_K.amax(dim=-1, keepdim=True)
    return torch.where(top_val_2_P_K == best, top_idx_2_P_K, _I64_MAX).amin(dim=-1)


def vocab_stats_tiled(logits_s: LogitsFn, logits_t: LogitsFn, targets_P: Tensor, vocab_size: int, *,
                      rank_anchor_P: Tensor, vocab_chunk: int = 4096, topk: int = 16,
                      buffers: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """:func:`vocab_stats` for P positions without ever holding P x V logits: the vocabulary is visited in tiles.

    ``logits_s(v0, v1, out)`` writes the student's logits of ids [v0, v1) for the P positions into ``out`` (P, v1 -
    v0) and returns it (likewise ``logits_t``). Per model and row, an *online* softmax keeps, relative to the running
    maximum m of the row's logits x (rescaled by exp(m_old - m_new) whenever m grows):

        Z = sum_v e^(x_v - m),   A = sum_v e^(x_v - m) (x_v - m),   D = sum_v e^(x_v - m) (x_v - y_v)

    where y is the *other* model's logit of the same id. With log Z_tot = m + log Z:

        log p(target) = x_target - log Z_tot,        H(p) = log Z - A / Z,
        KL(p || q) = sum_v p_v (x_v - y_v) - (log Z_tot(x) - log Z_tot(y)) = D / Z - (log Z_tot(x) - log Z_tot(y)).

    **One precision per log-softmax.** Every number of a row comes from the tile values themselves: x_target is
    gathered from the tile that holds the target id, after whatever the logits functions applied (dtype rounding,
    output transform, temperature), and m, Z, A, D are sums over the same values. So log p(target) <= 0 exactly
    (Z >= e^(m - m) = 1 and x_target <= m), and identical rows of the two models give A = 0 and KL = 0 exactly.
    The one exception is the teacher rank: it counts ids whose teacher logit exceeds ``rank_anchor_P`` tile by
    tile, before the target's tile may have been visited, so the anchor must be computed the way the tiles are
    (the caller's job, see :meth:`drift.collect.scoring.LMHead.target_logits`). Where the anchor and the tile value
    of the target still differ (by one unit in the last place of the logits' dtype, when the two accumulations round
    to different sides), ids tied with either value may be counted differently: a near-tie effect on the rank only.

    Top-k lists are merged tile by tile (the k best of the running list and the tile's k best, ties toward the
    lower id). Each student candidate carries the teacher's logit of the same id from the same tile, so the
    teacher's mass on the student's top k is exact and in the tiles' precision:

        M = sum_{v in topk(x)} e^(y_v - log Z_tot(y)).

    Args:
        logits_s: fills the student's logits tile (float32 or float64 ``out``).
        logits_t: fills the teacher's logits tile.
        targets_P: realized token ids (P,).
        vocab_size: ids [0, vocab_size) are visited.
        rank_anchor_P: the teacher's logit of the target as its tiles will hold it (P,), for the rank.
        vocab_chunk: tile width.
        topk: k for the top-k overlap and the teacher's mass on the student's top k (clamped to V).
        buffers: two (2, >= P, vocab_chunk) tensors to reuse; their dtype is the tiles' (default float32).

    Returns:
        The :func:`vocab_stats` dict of (P,) tensors.

    Peak memory: four (P, vocab_chunk) tiles.
    """
    p = targets_P.shape[0]
    dev = targets_P.device
    k = max(1, min(int(topk), vocab_size))
    vc = max(1, min(int(vocab_chunk), vocab_size))
    if buffers is None:
        buffers = (torch.empty((2, p, vc), device=dev), torch.empty((2, p, vc), device=dev))
    logit_buf, exp_buf = buffers
    dtype = logit_buf.dtype
    anchor = rank_anchor_P.to(dtype)
    tgt = targets_P.long()
    m = torch.empty((2, p), device=dev, dtype=dtype)
    target = torch.zeros((2, p), device=dev, dtype=dtype)  # x_target per model, gathered from its tile
    z, a, d = (torch.zeros((2, p), device=dev, dtype=torch.float64) for _ in range(3))
    rank = torch.zeros(p, device=dev, dtype=torch.long)
    top_val = torch.full((2, p, k), -math.inf, device=dev, dtype=dtype)
    # placeholder ids >= vocab_size lose every tie to a real id, so they never survive the visit of all ids
    top_idx = (vocab_size + torch.arange(k, device=dev)).expand(2, p, k).contiguous()
    top_t_at_s = torch.full((p, k), -math.inf, device=dev, dtype=dtype)  # teacher logits at the student's top ids
    for v0 in range(0, vocab_size, vc):
        v1 = min(vocab_size, v0 + vc)
        w = v1 - v0
        lg = logit_buf[:, :p, :w]
        logits_s(v0, v1, lg[0])
        logits_t(v0, v1, lg[1])
        # top-k candidates of this tile, merged with the running lists (raw logits)
        tv, ti = _tile_topk(lg, min(k, w))
        cand_v = torch.cat((top_val, tv), dim=-1)
        cand_i = torch.cat((top_idx, ti + v0), dim=-1)
        cand_t = torch.cat((top_t_at_s, lg[1].gather(-1, ti[0])), dim=-1)
        top_val, sel = _topk_ties_low(cand_v, cand_i, k)
        top_idx = cand_i.gather(-1, sel)
        top_t_at_s = cand_t.gather(-1, sel[0])
        # teacher rank: ids strictly above the anchor, the target itself excluded
        above = lg[1] > anchor.unsqueeze(1)
        rank += above.sum(dim=1)
        inside = (tgt >= v0) & (tgt < v1)
        if bool(inside.any()):
            rows = inside.nonzero().squeeze(1)
            cols = tgt[rows] - v0
            rank[rows] -= above[rows, cols].long()
            target[:, rows] = lg[:, rows, cols]  # the target's own tile values, before centring
        # online softmax statistics (the tile maximum is the largest top-k candidate)
        m_tile = tv.amax(dim=-1)
        m_new = m_tile if v0 == 0 else torch.maximum(m, m_tile)
        lg -= m_new.unsqueeze(-1)  # centred in place: x - m_new
        ex = torch.exp(lg, out=exp_buf[:, :p, :w])
        z_tile = ex.sum(dim=-1).double()
        # dots[i, a, b] = sum_v ex[a, i, v] * lg[b, i, v]: own (a == b) and cross (a != b) terms in one pass
        dots = torch.bmm(ex.transpose(0, 1), lg.permute(1, 2, 0)).double()
        a_tile = torch.stack((dots[:, 0, 0], dots[:, 1, 1]))
        # sum_v e^(x - m_x) (x_v - y_v) = sum e^(x - m_x) ((x - m_x) - (y - m_y)) + Z_tile (m_x - m_y)
        gap = (m_new[0] - m_new[1]).double()
        d_tile = torch.stack((dots[:, 0, 0] - dots[:, 0, 1] + z_tile[0] * gap,
                              dots[:, 1, 1] - dots[:, 1, 0] - z_tile[1] * gap))
        if v0 > 0:
            delta = (m_new - m).double()
            scale = torch.exp(-delta)
            a = scale * (a - delta * z)
            z = scale * z
            d = scale * d
        z = z + z_tile
        a = a + a_tile
        d = d + d_tile
        m = m_new
    log_z = torch.log(z)
    log_z_tot = m.double() + log_z
    logprob = target.double() - log_z_tot  # [student log p(y), teacher log q(y)]
    entropy = log_z - a / z
    kl = d / z - (log_z_tot - log_z_tot.flip(0))  # [KL(p || q), KL(q || p)]
    s_top, t_top = top_idx[0], top_idx[1]
    overlap = (s_top.unsqueeze(2) == t_top.unsqueeze(1)).any(dim=2).sum(dim=1).float() / k
    mass = torch.exp(top_t_at_s.double() - log_z_tot[1].unsqueeze(1)).sum(dim=1).clamp(max=1.0)
    argmax = _argmax_lowest_id(top_val, top_idx)
    return {
        "student_logprob": logprob[0].float(),
        "teacher_logprob": logprob[1].float(),
        "student_entropy": entropy[0].float().clamp_min(0.0),
        "teacher_entropy": entropy[1].float().clamp_min(0.0),
        "kl_reverse": kl[0].float().clamp_min(0.0),
        "kl_forward": kl[1].float().clamp_min(0.0),
        "teacher_rank": rank.to(torch.int32),
        "student_argmax": argmax[0],
        "teacher_argmax": argmax[1],
        "topk_overlap": overlap,
        "teacher_mass_student_topk": mass.float(),
    }
