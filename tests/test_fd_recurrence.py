"""`trainables.nn.fd_recurrence.FDRecurrence`: the sigmoid FD recurrence and the learned-keep one, by hand.

Against the autograd loop it replaces (`FastDropoutRNN._fd_hidden`'s, written out here): the same
forward numbers (`==`), gradients within 1e-12 in float64, and finite differences (gradcheck).
"""

from __future__ import annotations

import pytest
import torch

from cohort_checks import load_benchmark
from trainables.nn import variance as vp
from trainables.nn.fd_recurrence import FDRecurrence, sigmoid_into
from trainables.nn.recurrent import FastDropoutRNN

autograd_loop = load_benchmark("storn_epoch").autograd_loop  # the loop as `_fd_hidden` ran it before


def inputs(steps: int, dtype: torch.dtype, seed: int = 2):
    # 3 x 8 units: each step's slice of the (T, 3, 8) buffers starts on a 64-byte boundary in float64,
    # as the reference's fresh tensors do (MKL's products can depend on alignment; test_recurrent.py)
    g = torch.Generator().manual_seed(seed)
    in_mean = torch.randn(steps, 3, 8, generator=g, dtype=dtype)
    in_var = torch.rand(steps, 3, 8, generator=g, dtype=dtype)
    in_var[0, 0] = 0.0  # a unit without input noise: at step 1 its variance is exactly 0
    w_rec = 0.5 * torch.randn(8, 8, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (in_mean, in_var, w_rec)], g


@pytest.mark.parametrize("transfer", ["sigmoid", "tanh"])
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("steps", [1, 9])
def test_written_out_recurrence_equals_autograd(transfer, learned, steps):
    (in_mean, in_var, w_rec), g = inputs(steps, torch.float64)
    logit = torch.tensor(0.85, dtype=torch.float64, requires_grad=True)
    keep = torch.sigmoid(logit) if learned else 0.7
    out = FDRecurrence.apply(in_mean, in_var, w_rec, keep, transfer)
    ref = autograd_loop(in_mean, in_var, w_rec, keep, transfer)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))  # the same operations forward: the same numbers
    grads_out = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref]
    wrt = (in_mean, in_var, w_rec) + ((logit,) if learned else ())
    got = torch.autograd.grad(out, wrt, grads_out, retain_graph=True)  # keep = sigmoid(logit) is shared
    want = torch.autograd.grad(ref, wrt, grads_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert float(got[1].abs().sum()) > 0 and (not learned or (float(got[3]) != 0.0) == (steps > 1))  # h_0 = 0


@pytest.mark.parametrize("transfer", ["sigmoid", "tanh"])
def test_gradients_match_finite_differences(transfer):
    (in_mean, in_var, w_rec), _ = inputs(4, torch.float64, seed=5)
    positive_var = (in_var.detach() + 0.1).requires_grad_()  # away from where(var > 0)'s step
    logit = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v, w, k: FDRecurrence.apply(m, v, w, torch.sigmoid(k), transfer),
                                    (in_mean, positive_var, w_rec, logit))


def test_float32_forward_is_bit_for_bit_and_sigmoid_into_is_variance_sigmoid():
    (in_mean, in_var, w_rec), _ = inputs(6, torch.float32)
    keep = torch.tensor(0.8)
    out = FDRecurrence.apply(in_mean, in_var, w_rec, keep, "sigmoid")
    ref = autograd_loop(in_mean, in_var, w_rec, keep, "sigmoid")
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    mean, var = torch.randn(50) * 4, torch.rand(50) * 3
    var[:10] = 0.0
    got = sigmoid_into(mean, var, torch.empty(50), torch.empty(50))
    want = vp.sigmoid(mean, var)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and float(got[1][:10].abs().sum()) == 0.0


def test_sigmoid_net_with_learned_rates_trains_through_it():
    """A STORN-like recognition net: sigmoid units, learned rates; its gradient equals the autograd loop's
    (float64: 1e-10), every parameter's (the keep logits included) nonzero."""
    torch.manual_seed(0)
    net = FastDropoutRNN(5, 8, 3, "sigmoid", 0.1, 0.3, 0.2, learn_rates=True).double()
    x = torch.rand(7, 4, 5, dtype=torch.float64).round()
    grads = torch.autograd.grad(net.moments(x)[1].sum() + net(x).sum(), list(net.parameters()))

    in_mean, in_var = vp.fd_affine(x, None, net.core.weight_ih_l0, net.core.bias_ih_l0 + net.core.bias_hh_l0,
                                   net.keep_input)
    mean, var = autograd_loop(in_mean, in_var, net.core.weight_hh_l0, net.keep_hidden, "sigmoid")
    out_mean, out_var = vp.fd_affine(mean, var, net.out.weight, net.out.bias, net.keep_output)
    ref = out_var.sum() + (out_mean / torch.sqrt(1.0 + vp.PROBIT_SCALE * out_var)).sum()
    want = torch.autograd.grad(ref, list(net.parameters()), allow_unused=True)
    for (name, _), a, b in zip(net.named_parameters(), grads, want):
        if b is None:  # weight_hh's twin bias and the like: unused by both
            assert a is None or float(a.abs().sum()) == 0.0, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert float(grads[[n for n, _ in net.named_parameters()].index("keep_logits")].abs().min()) > 0


@pytest.mark.parametrize("transfer", ["sigmoid", "tanh"])
def test_member_axis_runs_each_member_as_its_own_recurrence(transfer):
    """K = 3 members (T, K, B, H) with their own W_rec and keep (K, 1, 1): each member's outputs and
    gradients (W_rec's and keep's its own) those of its solo recurrence (float64, 1e-12)."""
    g = torch.Generator().manual_seed(7)
    steps, members = 5, 3
    in_mean = torch.randn(steps, members, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    in_var = torch.rand(steps, members, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w_rec = (0.5 * torch.randn(members, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.tensor([0.2, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
    keep = torch.sigmoid(logits).reshape(members, 1, 1)
    out = FDRecurrence.apply(in_mean, in_var, w_rec, keep, transfer)
    grads_out = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in out]
    got = torch.autograd.grad(out, (in_mean, in_var, w_rec, logits), grads_out)
    for k in range(members):
        solo = FDRecurrence.apply(in_mean[:, k], in_var[:, k], w_rec[k], torch.sigmoid(logits[k]), transfer)
        for a, b in zip(out, solo):
            torch.testing.assert_close(a[:, k], b, rtol=1e-12, atol=1e-12)
        want = torch.autograd.grad(solo, (in_mean, in_var, w_rec, logits), [o[:, k] for o in grads_out])
        torch.testing.assert_close(got[0][:, k], want[0][:, k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1][:, k], want[1][:, k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[2][k], want[2][k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[3][k], want[3][k], rtol=1e-12, atol=1e-12)
        assert float(want[3][k]) != 0.0


@pytest.mark.parametrize("transfer", ["sigmoid", "tanh"])
def test_active_members_run_only_their_own_steps(transfer):
    """`active`: members ordered longest first, lengths 6, 4 and 4; step t runs the first active[t]. Each
    member's outputs over its own steps and its gradients are its solo recurrence's on those steps
    (float64, 1e-12); the rows past its end are 0 and take no gradient."""
    g = torch.Generator().manual_seed(11)
    lengths, members = [6, 4, 4], 3
    in_mean = torch.randn(6, members, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    in_var = torch.rand(6, members, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w_rec = (0.5 * torch.randn(members, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.tensor([0.2, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
    active = [sum(1 for n in lengths if n > t) for t in range(6)]
    assert active == [3, 3, 3, 3, 1, 1]
    out = FDRecurrence.apply(in_mean, in_var, w_rec, torch.sigmoid(logits).reshape(-1, 1, 1), transfer, active)
    assert float(out[0][4:, 1:].detach().abs().sum()) == 0.0 and float(out[1][4:, 1:].detach().abs().sum()) == 0.0
    grads_out = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in out]
    got = torch.autograd.grad(out, (in_mean, in_var, w_rec, logits), grads_out)
    assert float(got[0][4:, 1:].abs().sum()) == 0.0
    for k, steps in enumerate(lengths):
        solo = FDRecurrence.apply(in_mean[:steps, k], in_var[:steps, k], w_rec[k], torch.sigmoid(logits[k]), transfer)
        for a, b in zip(out, solo):
            torch.testing.assert_close(a[:steps, k], b, rtol=1e-12, atol=1e-12)
        want = torch.autograd.grad(solo, (in_mean, in_var, w_rec, logits), [o[:steps, k] for o in grads_out])
        torch.testing.assert_close(got[0][:steps, k], want[0][:steps, k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1][:steps, k], want[1][:steps, k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[2][k], want[2][k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[3][k], want[3][k], rtol=1e-12, atol=1e-12)
