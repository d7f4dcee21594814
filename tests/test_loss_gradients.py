"""The closed-form loss gradients of `trainables.nn.loss_gradients` equal autograd's bit for bit."""

import pytest
import torch

from trainables import fd, ivn, mdn, mlp
from trainables.kit.fast_dropout import output_moments
from trainables.nn import loss_gradients
from trainables.nn.gaussian import VARIANCE_FLOOR


def _autograd(loss_fn, raw, y):
    raw = raw.detach().clone().requires_grad_(True)
    loss = loss_fn(raw, y)
    (grad,) = torch.autograd.grad(loss.sum(), raw)
    return loss.detach(), grad


def _inputs(seed, members, n, d, width, dtype):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(members, n, width, generator=g, dtype=dtype) * 3
    y = torch.randn(members, n, d, generator=g, dtype=dtype)
    return raw, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [10, 25, 50, 7])
def test_mean_squared_error_is_autograds(n, dtype):
    for seed in range(20):
        raw, y = _inputs(seed, 5, n, 2, 2, dtype)
        expected = _autograd(lambda r, t: mlp.cohort_heads({"train": (raw[0], y[0])}).loss(r, t), raw, y)
        got = loss_gradients.mean_squared_error(raw, y)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [10, 25, 50, 7])
def test_fd_objective_gradient_is_autograds(n, dtype):
    for seed in range(20):
        raw, y = _inputs(seed, 4, n, 1, 2, dtype)
        expected = _autograd(lambda r, t: fd.squared_error(t, *output_moments(r)), raw, y)
        got = loss_gradients.moments_squared_error(raw, y)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert torch.count_nonzero(got[1][..., 1:]) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [10, 25, 50, 7])
def test_ivn_objective_gradient_is_autograds(n, dtype):
    for seed in range(20):
        raw, y = _inputs(seed, 4, n, 1, 2, dtype)
        raw[..., 1] = raw[..., 1].abs() * 0.5
        raw[0, :3, 1] = 0.0  # below the floor: no gradient reaches these variances
        raw[1, :2, 1] = VARIANCE_FLOOR  # at the floor: clamp_min passes it
        expected = _autograd(lambda r, t: ivn.mean_nll(t, *output_moments(r)), raw, y)
        got = loss_gradients.moments_gaussian_nll(raw, y, VARIANCE_FLOOR)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert torch.count_nonzero(got[1][0, :3, 1]) == 0 and torch.count_nonzero(got[1][1, :2, 1]) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("components,d", [(1, 1), (3, 1), (2, 2)])
@pytest.mark.parametrize("n", [10, 25, 7])
def test_mixture_nll_gradient_is_autograds(n, components, d, dtype):
    heads = mdn.cohort_heads(components, d)
    for seed in range(10):
        raw, y = _inputs(seed, 3, n, d, components * (1 + 2 * d), dtype)
        raw[0, 0, -1] = 30.0  # past softplus's threshold (20): its gradient passes unchanged
        expected = _autograd(heads.loss, raw, y)
        got = loss_gradients.mixture_nll(raw, y, components, VARIANCE_FLOOR)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
