"""Variance propagation (Sections 2.3, 2.5): every rule against Monte Carlo with stated tolerances,
the keep-probability scaling of fast dropout, tanh through 2 sigma(2x) - 1, gradients, and the
deterministic limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.nn import variance as vp
from trainables.nn.variance import (
    TRANSFERS,
    fd_affine,
    gaussian_affine,
    identity,
    product,
    rectifier,
    sigmoid,
    tanh,
)

F64 = torch.float64
N_SAMPLES = 100_000
# Exact rules are checked to 5 standard errors of the Monte Carlo estimate: a false failure has
# probability ~6e-7 per comparison, a wrong rule (say a missing V[x] V[W] term) is off by many.
N_SE = 5.0

# Means on [-4, 4] and variances on [0.01, 9], as wide as pre-synaptic activations get in practice.
GRID_MEANS = torch.linspace(-4.0, 4.0, 9, dtype=F64)
GRID_VARS = torch.logspace(math.log10(0.01), math.log10(9.0), 6, dtype=F64)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_samples(mean: torch.Tensor, var: torch.Tensor, g: torch.Generator, n: int = N_SAMPLES) -> torch.Tensor:
    """n draws of independent N(mean_i, var_i): (n, *mean.shape)."""
    eps = torch.randn((n, *mean.shape), generator=g, dtype=mean.dtype)
    return mean + var.sqrt() * eps


def grid() -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = torch.meshgrid(GRID_MEANS, GRID_VARS, indexing="ij")
    return mean.reshape(-1), var.reshape(-1)


def assert_moments(
    samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, mean_atol: float = 0.0, var_atol: float = 0.0
) -> None:
    """Sample moments of `samples` (n, ...) against the op's (mean, var).

    Tolerance: N_SE standard errors of each estimate, estimated from the samples
    (sqrt(var / n) for the mean, sqrt((m4 - var^2) / n) for the variance), plus `*_atol` for the
    error of an approximation, plus 1e-12 for components that are deterministic in the samples.
    """
    n = samples.shape[0]
    sample_mean = samples.mean(0)
    centred = samples - sample_mean
    sample_var = centred.square().mean(0)
    m4 = centred.pow(4).mean(0)
    mean_tol = N_SE * (sample_var / n).sqrt() + mean_atol + 1e-12
    var_tol = N_SE * ((m4 - sample_var.square()).clamp_min(0) / n).sqrt() + var_atol + 1e-12
    mean_err, var_err = (mean - sample_mean).abs(), (var - sample_var).abs()
    assert (mean_err <= mean_tol).all(), f"mean: worst excess {(mean_err - mean_tol).max():.3g}"
    assert (var_err <= var_tol).all(), f"variance: worst excess {(var_err - var_tol).max():.3g}"


# ---------------------------------------------------------------- exact rules against Monte Carlo


def test_product_matches_monte_carlo():
    g = generator(1)
    mean_a = torch.tensor([0.0, 1.5, -2.0, 0.3, 4.0], dtype=F64)
    var_a = torch.tensor([1.0, 0.2, 3.0, 0.01, 0.5], dtype=F64)
    mean_b = torch.tensor([2.0, -1.0, 0.0, 0.7, 0.1], dtype=F64)
    var_b = torch.tensor([0.5, 2.0, 1.0, 0.3, 0.05], dtype=F64)
    samples = gaussian_samples(mean_a, var_a, g) * gaussian_samples(mean_b, var_b, g)
    assert_moments(samples, *product(mean_a, var_a, mean_b, var_b))


def test_product_with_a_deterministic_factor():
    mean_a, var_a = torch.tensor([2.0, -3.0], dtype=F64), torch.tensor([0.5, 0.1], dtype=F64)
    mean_b = torch.tensor([0.5, 4.0], dtype=F64)
    expected = (mean_a * mean_b, var_a * mean_b.square())
    for got in (product(mean_a, var_a, mean_b, None), product(mean_a, var_a, mean_b, torch.zeros_like(mean_b))):
        torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    _, var = product(mean_a, None, mean_b, None)
    assert torch.equal(var, torch.zeros_like(var))


def test_gaussian_affine_matches_monte_carlo():
    g = generator(2)
    n_in, n_out = 8, 3
    mean = torch.randn(n_in, generator=g, dtype=F64)
    var = torch.rand(n_in, generator=g, dtype=F64) * 2
    w_mean = torch.randn(n_out, n_in, generator=g, dtype=F64) * 0.5
    w_var = torch.rand(n_out, n_in, generator=g, dtype=F64) * 0.3
    b_mean = torch.randn(n_out, generator=g, dtype=F64)
    b_var = torch.rand(n_out, generator=g, dtype=F64)
    x = gaussian_samples(mean, var, g)  # (n, in)
    w = gaussian_samples(w_mean, w_var, g)  # (n, out, in): a fresh weight draw per sample
    b = gaussian_samples(b_mean, b_var, g)  # (n, out)
    a = torch.einsum("ni,noi->no", x, w) + b
    assert_moments(a, *gaussian_affine(mean, var, w_mean, w_var, b_mean, b_var))


def test_gaussian_affine_eq_18_terms_on_numbers():
    # One input, one output: V[a] = V[b] + V[w] E[x]^2 + V[x] E[w]^2 + V[x] V[w] = 0.5 + 0.3*4 + 2*9 + 2*0.3.
    one = lambda v: torch.tensor([v], dtype=F64)  # noqa: E731
    mean, var = gaussian_affine(one(2.0), one(2.0), one(3.0)[:, None], one(0.3)[:, None], one(1.0), one(0.5))
    assert mean.item() == pytest.approx(2.0 * 3.0 + 1.0, rel=1e-15)
    assert var.item() == pytest.approx(0.5 + 1.2 + 18.0 + 0.6, rel=1e-15)


@pytest.mark.parametrize("keep_kind", ["float", "per_feature"])
def test_fd_affine_matches_monte_carlo(keep_kind):
    g = generator(3)
    n_in, n_out = 20, 4
    mean = torch.randn(n_in, generator=g, dtype=F64) * 2
    var = torch.rand(n_in, generator=g, dtype=F64)
    weight = torch.randn(n_out, n_in, generator=g, dtype=F64) * 0.3
    bias = torch.randn(n_out, generator=g, dtype=F64)
    keep = 0.7 if keep_kind == "float" else torch.linspace(0.2, 1.0, n_in, dtype=F64)
    x = gaussian_samples(mean, var, g)  # (n, in)
    zeta = torch.bernoulli(torch.as_tensor(keep, dtype=F64).expand(N_SAMPLES, n_in), generator=g)
    a = (x * zeta) @ weight.T + bias  # no rescaling by 1 / keep
    assert_moments(a, *fd_affine(mean, var, weight, bias, keep))


def test_fd_affine_mean_is_scaled_by_the_keep_probability_not_the_dropout_rate():
    g = generator(4)
    mean = torch.randn(5, 6, generator=g, dtype=F64)
    weight = torch.randn(3, 6, generator=g, dtype=F64)
    bias = torch.randn(3, generator=g, dtype=F64)
    got_mean, got_var = fd_affine(mean, None, weight, bias, keep=0.8)
    torch.testing.assert_close(got_mean, 0.8 * mean @ weight.T + bias, rtol=1e-12, atol=1e-12)
    # The original code's slip, d = 0.2 in place of 1 - d, is far from it.
    assert (got_mean - (0.2 * mean @ weight.T + bias)).abs().max() > 0.1
    # With a deterministic input the variance is the dropout noise alone: keep (1 - keep) E[x]^2 (W^2)^T.
    torch.testing.assert_close(got_var, 0.8 * 0.2 * mean.square() @ weight.square().T, rtol=1e-12, atol=1e-12)


def test_fd_affine_rejects_a_keep_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"0 <= keep <= 1.*keep=1.5"):
        fd_affine(torch.zeros(2), None, torch.zeros(1, 2), keep=1.5)


# Ratios m / s from -3 to 15, plus -20, where E[y] ~ 1e-89 and no sample is positive. Between
# r = -3.5 and -20 positives are too rare for 1e5 samples to estimate their moments (at r = -5 a
# positive sample has probability 3e-7), so no pair there.
RECTIFIER_CASES = [(-2.0, 4.0), (-2.0, 0.5), (-0.3, 0.01), (-0.5, 0.5), (0.0, 0.01), (0.0, 0.5), (0.0, 4.0),
                   (0.3, 0.01), (0.3, 0.5), (0.3, 4.0), (1.5, 0.01), (1.5, 0.5), (1.5, 4.0), (-2.0, 0.01)]


@pytest.mark.parametrize(("mean_value", "var_value"), RECTIFIER_CASES)
def test_rectifier_matches_monte_carlo(mean_value, var_value):
    g = generator(5)
    mean, var = torch.tensor([mean_value], dtype=F64), torch.tensor([var_value], dtype=F64)
    samples = torch.relu(gaussian_samples(mean, var, g))
    assert_moments(samples, *rectifier(mean, var))


def test_rectifier_closed_form_at_zero_mean():
    # m = 0: E[y] = s phi(0) = s / sqrt(2 pi), V[y] = v / 2 - v / (2 pi).
    var = torch.tensor([0.25, 1.0, 9.0], dtype=F64)
    mean_y, var_y = rectifier(torch.zeros_like(var), var)
    torch.testing.assert_close(mean_y, var.sqrt() / math.sqrt(2 * math.pi), rtol=1e-14, atol=0)
    torch.testing.assert_close(var_y, var * (0.5 - 1 / (2 * math.pi)), rtol=1e-14, atol=0)


def test_identity_matches_monte_carlo():
    g = generator(6)
    mean, var = torch.tensor([-1.0, 0.0, 3.0], dtype=F64), torch.tensor([0.1, 1.0, 5.0], dtype=F64)
    assert_moments(gaussian_samples(mean, var, g), *identity(mean, var))


# ------------------------------------------------- sigmoid and tanh: approximations, not exact rules

# Tolerances are the approximations' own worst errors on GRID_MEANS x GRID_VARS, measured against
# 200-point Gauss-Hermite quadrature of Eqs. (19)/(20), rounded up, plus the Monte Carlo error:
# - sigmoid mean, sigma(m / sqrt(1 + pi v / 8)): worst 0.0085 -> 0.01.
# - sigmoid variance: worst 0.027. It is bounded by sup_x |sigma(x)^2 - sigma(alpha (x + beta))|
#   = 0.0271 (pinned in test_second_moment_fit_error), an absolute error that does not shrink with
#   v, so no relative tolerance holds: at v = 0.01 the true variance is ~2e-5 and the
#   approximation's 0.013 is 600x it. Hence absolute: 0.03, 12% of the largest possible 0.25.
# - tanh mean, 2 E[sigma(2a)] - 1: twice the sigmoid's error at (2m, 4v), v up to 36: worst 0.030 -> 0.035.
# - tanh variance, 4 V[sigma(2a)]: four times the sigmoid's, worst 0.107 -> 0.12 (of a maximum of 1).
SIGMOID_MEAN_ATOL, SIGMOID_VAR_ATOL = 0.01, 0.03
TANH_MEAN_ATOL, TANH_VAR_ATOL = 0.035, 0.12


def test_second_moment_fit_error():
    x = torch.linspace(-12.0, 12.0, 240_001, dtype=F64)
    fit_error = (torch.sigmoid(x).square() - torch.sigmoid(vp.ALPHA * (x + vp.BETA))).abs().max().item()
    assert fit_error == pytest.approx(0.0271, abs=5e-4)
    # The fit is pinned at sigma(x)^2 = 1/2 with matching slope (hence alpha and beta).
    x_half = torch.tensor(math.log(1 + math.sqrt(2)), dtype=F64)
    assert torch.sigmoid(x_half).square().item() == pytest.approx(0.5, abs=1e-15)
    assert torch.sigmoid(vp.ALPHA * (x_half + vp.BETA)).item() == pytest.approx(0.5, abs=1e-15)


def test_sigmoid_within_its_approximation_error_of_monte_carlo():
    g = generator(7)
    mean, var = grid()
    samples = torch.sigmoid(gaussian_samples(mean, var, g))
    assert_moments(samples, *sigmoid(mean, var), mean_atol=SIGMOID_MEAN_ATOL, var_atol=SIGMOID_VAR_ATOL)


def test_tanh_within_its_approximation_error_of_monte_carlo():
    g = generator(8)
    mean, var = grid()
    samples = torch.tanh(gaussian_samples(mean, var, g))
    assert_moments(samples, *tanh(mean, var), mean_atol=TANH_MEAN_ATOL, var_atol=TANH_VAR_ATOL)


def test_tanh_is_not_two_sigmoid_minus_one():
    g = generator(9)
    mean, var = torch.tensor([1.0, -1.5, 2.0, 0.5], dtype=F64), torch.tensor([0.5, 1.0, 0.2, 0.1], dtype=F64)
    sample_mean = torch.tanh(gaussian_samples(mean, var, g)).mean(0)
    mean_y, _ = tanh(mean, var)
    wrong = 2 * sigmoid(mean, var)[0] - 1  # the moments of 2 sigma(a) - 1 = tanh(a / 2)
    assert (mean_y - sample_mean).abs().max() < TANH_MEAN_ATOL
    assert (wrong - sample_mean).abs().min() > 0.15  # over 4x the tolerance the right rule meets


def test_zero_input_variance_gives_exactly_zero_output_variance():
    # The fit residual sigma(alpha (m + beta)) - sigma(m)^2 (0.01258 at m = 0) must not leak out:
    # a deterministic input is deterministic after any function of it.
    mean = torch.tensor([-3.0, 0.0, 0.88, 3.0], dtype=F64)
    residual = (torch.sigmoid(vp.ALPHA * (mean + vp.BETA)) - torch.sigmoid(mean).square()).clamp_min(0)
    assert residual[1].item() == pytest.approx(0.01258, abs=1e-5)
    for op in (sigmoid, tanh):
        _, var_y = op(mean, torch.zeros_like(mean))
        assert torch.equal(var_y, torch.zeros_like(mean))
        _, var_small = op(mean, torch.full_like(mean, 1e-3))  # just above 0: the approximation again
        assert (var_small > 0).all()


# ------------------------------------------------------------------------ deterministic limits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_limits_are_the_plain_functions(dtype):
    g = generator(10)
    mean = (torch.randn(4, 7, generator=g, dtype=F64) * 3).to(dtype)
    mean[0, :3] = 0.0  # the rectifier's kink
    zeros = torch.zeros_like(mean)
    weight = torch.randn(5, 7, generator=g, dtype=F64).to(dtype)
    bias = torch.randn(5, generator=g, dtype=F64).to(dtype)

    plain = F.linear(mean, weight, bias)
    for var in (None, zeros):
        got_mean, got_var = fd_affine(mean, var, weight, bias, keep=1.0)
        assert torch.equal(got_mean, plain) and torch.equal(got_var, torch.zeros_like(plain))
        got_mean, got_var = gaussian_affine(mean, var, weight, torch.zeros_like(weight), bias)
        assert torch.equal(got_mean, plain) and torch.equal(got_var, torch.zeros_like(plain))

    for var in (None, zeros):
        for op, f in ((rectifier, torch.relu), (identity, lambda x: x)):
            got_mean, got_var = op(mean, var)
            assert torch.equal(got_mean, f(mean)) and torch.equal(got_var, zeros)
        assert torch.equal(sigmoid(mean, var)[0], torch.sigmoid(mean))
        assert torch.equal(tanh(mean, var)[0], torch.tanh(mean))


def test_transfers_registry():
    assert TRANSFERS == {"identity": identity, "rectifier": rectifier, "sigmoid": sigmoid, "tanh": tanh}


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_float32_agrees_with_float64_and_leading_shapes_are_free(name):
    g = generator(11)
    mean = torch.randn(2, 3, 16, generator=g, dtype=F64) * 2
    var = torch.rand(2, 3, 16, generator=g, dtype=F64) * 3
    weight = torch.randn(5, 16, generator=g, dtype=F64) * 0.3
    f = TRANSFERS[name]
    ref = f(*fd_affine(mean, var, weight, None, keep=0.6))
    got = f(*fd_affine(mean.float(), var.float(), weight.float(), None, keep=0.6))
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    # float32 round-off through a 16-term sum and one transfer: 1e-5 relative is ample.
    torch.testing.assert_close((got[0].double(), got[1].double()), ref, rtol=1e-5, atol=1e-6)
    # (2, 3, in) is 6 independent rows: the same as the flattened (6, in).
    flat = f(*fd_affine(mean.reshape(6, 16), var.reshape(6, 16), weight, None, keep=0.6))
    torch.testing.assert_close((flat[0].reshape(2, 3, 5), flat[1].reshape(2, 3, 5)), ref, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------------------------ gradients


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(F64).requires_grad_(True)


def test_gradcheck_affine_maps_and_product():
    g = generator(12)
    mean, var = leaf(torch.randn(3, 4, generator=g)), leaf(torch.rand(3, 4, generator=g) + 0.1)
    weight, bias = leaf(torch.randn(2, 4, generator=g)), leaf(torch.randn(2, generator=g))
    w_var, b_var = leaf(torch.rand(2, 4, generator=g) + 0.1), leaf(torch.rand(2, generator=g) + 0.1)
    keep = leaf(torch.rand(4, generator=g) * 0.8 + 0.1)
    assert torch.autograd.gradcheck(lambda m, v, w, b: fd_affine(m, v, w, b, keep=0.7), (mean, var, weight, bias))
    with_keep = (mean, var, weight, bias, keep)
    assert torch.autograd.gradcheck(lambda m, v, w, b, k: fd_affine(m, v, w, b, keep=k), with_keep)
    assert torch.autograd.gradcheck(lambda m, w, b: fd_affine(m, None, w, b, keep=0.7), (mean, weight, bias))
    assert torch.autograd.gradcheck(gaussian_affine, (mean, var, weight, w_var, bias, b_var))
    assert torch.autograd.gradcheck(lambda m, wm, wv: gaussian_affine(m, None, wm, wv), (mean, weight, w_var))
    mean_b, var_b = leaf(torch.randn(3, 4, generator=g)), leaf(torch.rand(3, 4, generator=g))
    assert torch.autograd.gradcheck(product, (mean, var, mean_b, var_b))


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_gradcheck_transfers_on_the_grid(name):
    mean, var = grid()
    assert torch.autograd.gradcheck(TRANSFERS[name], (leaf(mean), leaf(var)))


def test_gradcheck_rectifier_near_zero_variance():
    # Ratios m / s from 0 to 100 (past RATIO_LIMIT, where the ratio is clamped). A step of 1e-10
    # keeps the finite differences inside each v's neighbourhood: at v = 1e-6, s changes by 0.005%.
    mean = leaf(torch.tensor([0.0, 1e-4, -1e-4, 1e-3, -0.05, 0.1, 0.0, 5e-3, -2e-3, 0.2], dtype=F64))
    var = leaf(torch.tensor([1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1e-4, 1e-4, 1e-4, 1e-4], dtype=F64))
    assert torch.autograd.gradcheck(rectifier, (mean, var), eps=1e-10, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rectifier_gradients_are_finite_at_and_below_tiny_variances(dtype):
    tiny = torch.finfo(dtype).tiny
    mean = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0] * 3, dtype=dtype, requires_grad=True)
    var = torch.tensor([0.0] * 5 + [tiny / 8] * 5 + [tiny] * 5, dtype=dtype, requires_grad=True)  # 0, subnormal, tiny
    mean_y, var_y = rectifier(mean, var)
    grad_mean, grad_var = torch.autograd.grad((mean_y + var_y).sum(), (mean, var))
    assert torch.isfinite(grad_mean).all() and torch.isfinite(grad_var).all()
    # At v = 0 this is the rectifier itself: d/dm = 1{m > 0} (0 at the kink, as torch.relu), d/dv = 0.
    torch.testing.assert_close(grad_mean[:5], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype), rtol=0, atol=0)
    assert torch.equal(grad_var[:5], torch.zeros(5, dtype=dtype))
    # Values stay those of the rectifier to within phi(0) tiny^(1/4) (the standard-deviation floor).
    torch.testing.assert_close(mean_y.detach(), torch.relu(mean.detach()), rtol=0, atol=0.4 * tiny**0.25)


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0])
def test_tanh_backward_is_the_gradient_of_tanh(scale):
    g = torch.Generator().manual_seed(4)
    mean = (scale * torch.randn(40, 6, generator=g, dtype=torch.float64)).requires_grad_()
    var = scale * torch.rand(40, 6, generator=g, dtype=torch.float64)
    var[:3] = 0.0  # deterministic inputs: torch.where passes no gradient to the variance branch
    var.requires_grad_()
    mean_y, var_y = vp.tanh(mean, var)
    grad_mean_y, grad_var_y = torch.randn_like(mean_y), torch.randn_like(var_y)
    want = torch.autograd.grad((mean_y, var_y), (mean, var), (grad_mean_y, grad_var_y))
    got = vp.tanh_backward(mean.detach(), var.detach(), mean_y.detach(), grad_mean_y, grad_var_y)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_tanh_backward_into_writes_tanh_backward_bit_for_bit_into_strided_buffers():
    g = torch.Generator().manual_seed(5)
    mean, var = 2.0 * torch.randn(3, 16, 40, generator=g), torch.rand(3, 16, 40, generator=g)
    var[:, :2] = 0.0
    mean_y = vp.tanh(mean, var)[0]
    grad_mean_y, grad_var_y = torch.randn(3, 16, 40, generator=g), torch.randn(3, 16, 40, generator=g)
    buffers = torch.full((2, 3, 5, 16, 40), math.nan)  # (mean, var) x members x steps: step 2's slices
    got = vp.tanh_backward_into(mean, var, mean_y, grad_mean_y, grad_var_y, buffers[0, :, 2], buffers[1, :, 2])
    want = vp.tanh_backward(mean, var, mean_y, grad_mean_y, grad_var_y)
    assert got[0].data_ptr() == buffers[0, :, 2].data_ptr() and got[1].data_ptr() == buffers[1, :, 2].data_ptr()
    for a, b in zip(got, want):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert torch.isnan(buffers[:, :, [0, 1, 3, 4]]).all()  # nothing written outside the slices


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_into_gives_tanh_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(7)
    mean = 3.0 * torch.randn(64, 600, generator=g, dtype=dtype)
    var = torch.rand(64, 600, generator=g, dtype=dtype) * torch.logspace(-30, 2, 600, dtype=dtype)
    var[:5] = 0.0  # deterministic units: exactly (tanh(m), 0)
    out_mean, out_var = torch.full_like(mean, math.nan), torch.full_like(var, math.nan)
    got = vp.tanh_into(mean, var, out_mean, out_var)
    want = vp.tanh(mean, var)
    assert got[0] is out_mean and got[1] is out_var
    for a, b in zip(got, want):
        assert torch.equal(a.view(torch.int64 if dtype == torch.float64 else torch.int32),
                           b.view(torch.int64 if dtype == torch.float64 else torch.int32))
    assert torch.equal(out_var[:5], torch.zeros(5, 600, dtype=dtype))
    assert (out_var[5:] > 0).float().mean() > 0.5  # the masked branch was exercised on both sides


@pytest.mark.parametrize("input_variance", [0.0, 0.05])
def test_rectifier_without_masks_is_the_same_bits(monkeypatch, input_variance):
    """Where every variance is above the floor, `rectifier` skips its v = 0 masks: a fast-dropout
    net's moments and every gradient equal, bit for bit, those of the masked computation."""
    from trainables.nn import variance
    from trainables.nn.fdnet import FastDropoutNet

    def run() -> list[torch.Tensor]:
        torch.manual_seed(3)
        net = FastDropoutNet(2, 1, 3, 50, "rectifier", 0.2, 0.3, input_variance=input_variance)
        x = torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
        mean, var = net(x)
        (mean.square().mean() + var.mean()).backward()
        return [mean.detach(), var.detach()] + [p.grad for p in net.parameters()]

    taken = []
    unmasked = variance._unmasked
    monkeypatch.setattr(variance, "_unmasked", lambda v, f: taken.append(unmasked(v, f)) or taken[-1])
    fast = run()
    assert taken == [True, True, True]  # every hidden layer took the unmasked path
    monkeypatch.setattr(variance, "_unmasked", lambda v, f: False)
    masked = run()
    assert all(torch.equal(a, b) for a, b in zip(fast, masked))
    assert not torch.equal(fast[2], torch.zeros_like(fast[2]))


def test_rectifier_keeps_its_masks_where_a_variance_is_zero():
    mean = torch.tensor([[-1.0, 0.5, 2.0]])
    mean_y, var_y = rectifier(mean, torch.tensor([[0.0, 0.25, 1.0]]))
    assert mean_y[0, 0] == 0.0 and var_y[0, 0] == 0.0  # the rectifier itself at v = 0
    assert 0.5 < mean_y[0, 1] < 0.7 and var_y[0, 1] > 0
