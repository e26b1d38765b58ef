"""The OPD losses against hand-computed values and naive references; stop-gradient checks."""

from __future__ import annotations

import math

import pytest
import torch

from drift.train.loss import opd_full_kl_loss, opd_sampled_loss, reverse_kl, sampled_stats, token_logprobs

F64 = torch.float64


def test_sampled_loss_equals_hand_computed_value():
    s = torch.tensor([[-1.0, -2.0, -0.5], [-0.5, -1.0, -7.0]], dtype=F64)  # log pi_S(y_t)
    t = torch.tensor([[-1.5, -1.0, -0.5], [-2.5, -1.0, -3.0]], dtype=F64)  # log pi_T(y_t)
    w = torch.tensor([[1.0, 0.5, 2.0], [1.5, 1.0, 9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # A = t - s = [[-0.5, 1.0, 0.0], [-2.0, 0.0, (padding)]]
    # w*A*s: row 0: 1.0*(-0.5)*(-1.0) = 0.5, 0.5*1.0*(-2.0) = -1.0, 2.0*0.0*(-0.5) = 0
    #        row 1: 1.5*(-2.0)*(-0.5) = 1.5, 1.0*0.0*(-1.0) = 0          (the padded slot is ignored)
    # sum = 1.0 over N = 5 valid tokens -> loss = -1.0 / 5 = -0.2
    loss, stats = opd_sampled_loss(s, t, w, mask)
    assert loss.item() == pytest.approx(-0.2, abs=1e-12)
    assert stats["loss"] == pytest.approx(-0.2)
    assert stats["adv/mean"] == pytest.approx((-0.5 + 1.0 + 0.0 - 2.0 + 0.0) / 5)
    assert stats["adv/abs_mean"] == pytest.approx((0.5 + 1.0 + 0.0 + 2.0 + 0.0) / 5)
    assert stats["kl/k1_mean"] == pytest.approx(0.3)
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0, 0.0, -2.0, 0.0)]
    assert stats["kl/k3_mean"] == pytest.approx(sum(k3) / 5, rel=1e-6)
    assert (stats["weight/mean"], stats["weight/min"], stats["weight/max"]) == pytest.approx((1.2, 0.5, 2.0))
    assert stats["rollout/tokens"] == 5


def test_gradient_is_policy_gradient_with_stop_gradient_weights_and_advantages(rng):
    B, L, V = 3, 5, 7
    logits = torch.tensor(rng.normal(size=(B, L, V)), dtype=F64, requires_grad=True)
    targets = torch.tensor(rng.integers(0, V, size=(B, L)))
    teacher = torch.tensor(rng.normal(-2.0, 1.0, size=(B, L)), dtype=F64, requires_grad=True)
    weights = torch.tensor(rng.uniform(0.0, 2.0, size=(B, L)), dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    logp = torch.log_softmax(logits, dim=-1)
    student = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    loss, _ = opd_sampled_loss(student, teacher, weights, mask)
    loss.backward()
    # analytic: d loss / d logits = -(1/N) * w * A * (onehot(y) - softmax(logits)) at valid positions, 0 elsewhere
    with torch.no_grad():
        adv = teacher - student
        onehot = torch.nn.functional.one_hot(targets, V).to(F64)
        coef = -(weights * adv * mask) / mask.sum()
        expected = coef.unsqueeze(-1) * (onehot - logp.exp())
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-12)
    assert teacher.grad is None and weights.grad is None  # nothing flows into the teacher or the weights
    # the check is sensitive: without stop-gradient on A the gradient would differ
    student = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    wrong = -(weights.detach() * (teacher.detach() - student) * student * mask).sum() / mask.sum()
    (g_wrong,) = torch.autograd.grad(wrong, logits)
    assert not torch.allclose(g_wrong, expected)


def _naive_batch_mean_loss(s, t, w, mask):
    """-(1/N) sum_valid w_t * Abar * s_t, Abar = mean of t - s over valid tokens, one token at a time."""
    valid = [(b, i) for b in range(s.shape[0]) for i in range(s.shape[1]) if bool(mask[b, i])]
    abar = sum(float(t[b, i]) - float(s[b, i]) for b, i in valid) / len(valid)
    value = -sum(float(w[b, i]) * abar * float(s[b, i]) for b, i in valid) / len(valid)
    grad = [[-float(w[b, i]) * abar / len(valid) if bool(mask[b, i]) else 0.0 for i in range(s.shape[1])]
            for b in range(s.shape[0])]
    return abar, value, grad


def test_batch_mean_advantage_against_a_naive_loop_in_value_and_gradient(rng):
    B, L = 4, 6
    s = torch.tensor(rng.normal(-1.5, 0.7, size=(B, L)), dtype=F64, requires_grad=True)
    t = torch.tensor(rng.normal(-1.0, 0.7, size=(B, L)), dtype=F64, requires_grad=True)
    w = torch.tensor(rng.uniform(0.0, 2.0, size=(B, L)), dtype=F64)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    loss, stats = opd_sampled_loss(s, t, w, mask, advantage="batch_mean")
    loss.backward()
    abar, value, grad = _naive_batch_mean_loss(s.detach(), t.detach(), w, mask)
    assert loss.item() == pytest.approx(value, rel=1e-12)
    torch.testing.assert_close(s.grad, torch.tensor(grad, dtype=F64), rtol=1e-10, atol=1e-14)
    assert t.grad is None  # the batch mean is a constant: nothing flows into the teacher
    assert stats["adv/mean"] == pytest.approx(abar)  # the statistics describe the real advantages
    # the check can fail: the per-token loss differs in value and in gradient
    s2 = s.detach().clone().requires_grad_(True)
    token, _ = opd_sampled_loss(s2, t.detach(), w, mask)
    token.backward()
    assert token.item() != pytest.approx(value) and not torch.allclose(s2.grad, s.grad)
    with pytest.raises(ValueError, match="advantage must be one of"):
        opd_sampled_loss(s, t, w, mask, advantage="mean")


def test_batch_mean_of_uniform_advantage_equals_the_token_loss(rng):
    s = torch.tensor(rng.normal(size=(2, 3)), dtype=F64)
    t = s + 0.25  # A_t = 0.25 everywhere: its batch mean is itself
    mask, w = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=F64)
    a, _ = opd_sampled_loss(s, t, w, mask)
    b, _ = opd_sampled_loss(s, t, w, mask, advantage="batch_mean")
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    empty, _ = opd_sampled_loss(s.requires_grad_(True), t, w, torch.zeros(2, 3), advantage="batch_mean")
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(s.grad, torch.zeros(2, 3, dtype=F64))


def test_all_masked_batch_gives_zero_loss_with_a_graph():
    s = torch.zeros(2, 3, requires_grad=True)
    loss, stats = opd_sampled_loss(s, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(s.grad, torch.zeros(2, 3))
    assert math.isnan(stats["adv/mean"]) and stats["rollout/tokens"] == 0


def _naive_full_kl(student_logits, teacher_logits, weights, n):
    total = 0.0
    for i in range(student_logits.shape[0]):
        p = torch.softmax(student_logits[i].to(F64), dim=0)
        q = torch.softmax(teacher_logits[i].to(F64), dim=0)
        kl = sum(p[v] * (torch.log(p[v]) - torch.log(q[v])) for v in range(p.shape[0]))
        total = total + weights[i] * kl
    return total / n


def test_full_kl_loss_equals_naive_full_vocab_computation_in_value_and_gradient(rng):
    N, V = 7, 11
    s = torch.tensor(rng.normal(size=(N, V)), dtype=torch.float32, requires_grad=True)
    t = torch.tensor(rng.normal(size=(N, V)), dtype=torch.float32)
    w = torch.tensor(rng.uniform(0.0, 2.0, size=N), dtype=torch.float32)
    loss, stats = opd_full_kl_loss(s, t, w, N, student_head=lambda x: x, chunk_size=3)  # 3 checkpointed chunks
    (grad,) = torch.autograd.grad(loss, s)
    s64 = s.detach().to(F64).requires_grad_(True)
    naive = _naive_full_kl(s64, t.to(F64), w.to(F64), N)
    (grad_naive,) = torch.autograd.grad(naive, s64)
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    torch.testing.assert_close(grad.to(F64), grad_naive, rtol=1e-4, atol=1e-6)
    assert stats["kl/full_mean"] == pytest.approx(_naive_full_kl(s64, t.to(F64), torch.ones(N, dtype=F64),
                                                                 N).item(), rel=1e-5)


def test_full_kl_is_zero_for_identical_models_and_nonnegative(rng):
    x = torch.tensor(rng.normal(size=(5, 9)), dtype=torch.float32)
    assert torch.allclose(reverse_kl(x, x), torch.zeros(5), atol=1e-6)
    assert bool((reverse_kl(x, x.flip(0)) >= 0).all())


def test_chunked_token_logprobs_match_log_softmax_in_value_and_gradient(rng):
    N, D, V = 10, 4, 13
    head = torch.nn.Linear(D, V, dtype=F64)
    h = torch.tensor(rng.normal(size=(N, D)), dtype=F64, requires_grad=True)
    y = torch.tensor(rng.integers(0, V, size=N))
    ours = token_logprobs(h, y, head, chunk_size=4)
    ref = torch.log_softmax(head(h), dim=-1).gather(1, y.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(ours.to(F64), ref, rtol=1e-6, atol=1e-6)
    (g1,) = torch.autograd.grad(ours.sum(), h)
    (g2,) = torch.autograd.grad(ref.sum(), h)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_sampled_stats_ignore_padding():
    s = torch.tensor([[-1.0, 5.0]])
    t = torch.tensor([[-2.0, 99.0]])
    stats = sampled_stats(s, t, torch.tensor([[0.5, 7.0]]), torch.tensor([[1, 0]]))
    assert stats["adv/mean"] == -1.0 and stats["weight/max"] == 0.5 and stats["rollout/tokens"] == 1
