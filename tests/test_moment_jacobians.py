"""The moment rules with their Jacobians: the same values as `variance`'s, derivatives as autograd's."""

from __future__ import annotations

import pytest
import torch

from trainables.nn import moment_jacobians, variance


def elementwise_grads(rule, mean: torch.Tensor, var: torch.Tensor) -> list[torch.Tensor]:
    """autograd's dE/dm, dE/dv, dV/dm, dV/dv of an elementwise `variance` rule."""
    m, v = mean.clone().requires_grad_(True), var.clone().requires_grad_(True)
    out_mean, out_var = rule(m, v)
    grads = []
    for out in (out_mean, out_var):
        grads.extend(torch.autograd.grad(out.sum(), (m, v), retain_graph=True, allow_unused=True))
    return [torch.zeros_like(mean) if g is None else g for g in grads]


def inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mean = 3.0 * torch.randn(400, generator=generator, dtype=dtype)
    var = torch.rand(400, generator=generator, dtype=dtype) * 4.0 + 1e-3
    return mean, var


@pytest.mark.parametrize("name", ["rectifier", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_values_are_the_variance_rules_bit_for_bit(name, dtype):
    mean, var = inputs(dtype)
    var[:50] = 0.0  # the masked branches too
    expected = getattr(variance, name)(mean, var)
    got = moment_jacobians.RULES[name](mean, var)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("name", ["rectifier", "sigmoid"])
def test_the_jacobian_is_autograds_in_float64(name):
    mean, var = inputs(torch.float64)
    _, _, jacobian = moment_jacobians.RULES[name](mean, var)
    for got, expected in zip(jacobian, elementwise_grads(getattr(variance, name), mean, var)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_the_rectifier_at_zero_variance_is_the_relus_derivative():
    mean = torch.tensor([-1.0, 0.5, 2.0, 0.3])
    var = torch.tensor([0.0, 0.0, 1.0, 1e-30])  # the last below the float32 floor (1.08e-19)
    _, _, jacobian = moment_jacobians.rectifier(mean, var)
    expected = elementwise_grads(variance.rectifier, mean, var)
    assert jacobian.mean_mean[:2].tolist() == [0.0, 1.0]
    assert jacobian.mean_var[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]  # var 0 or below the floor: no d/dv
    for got, want in zip(jacobian, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_the_sigmoids_variance_at_zero_input_variance_has_no_gradient():
    mean, var = torch.tensor([-2.0, 0.0, 3.0]), torch.zeros(3)
    _, out_var, jacobian = moment_jacobians.sigmoid(mean, var)
    assert out_var.tolist() == [0.0, 0.0, 0.0]
    assert jacobian.var_mean.tolist() == [0.0, 0.0, 0.0] and jacobian.var_var.tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(jacobian.mean_mean, torch.sigmoid(mean) * (1 - torch.sigmoid(mean)))


def test_chain_is_the_vector_jacobian_product():
    jacobian = moment_jacobians.Jacobian(*(torch.full((2,), float(v)) for v in (1, 2, 3, 4)))
    grad_m, grad_v = moment_jacobians.chain(jacobian, torch.tensor([1.0, 0.5]), torch.tensor([10.0, -1.0]))
    assert grad_m.tolist() == [1 + 3 * 10, 0.5 - 3] and grad_v.tolist() == [2 + 4 * 10, 1.0 - 4]
