"""The transfer functions' moment rules of `trainables.nn.variance` with their partial derivatives.

A written-out backward pass through a fast-dropout net (`trainables.nn.stacked_fdnet`) needs, for
every unit, how the output moments (E, V) of a rule move with its input moments (m, v). Each rule
here returns the same E and V as its `variance` namesake (the same operations in the same order,
so the same bits) and the four partial derivatives `Jacobian(dE/dm, dE/dv, dV/dm, dV/dv)`, computed
alongside without autograd; `chain` turns the gradient at (E, V) into the gradient at (m, v).

The derivatives are the closed forms, not the chain rule through each operation of the formula, so
they equal autograd's gradient of the `variance` rule only up to float rounding. Where `variance`
clamps or masks, the derivative is what autograd gives there: 0 for V where the variance is
clamped at 0 (E[y^2] - E[y]^2 < 0 by cancellation) or the input variance is 0, and the rectifier's
d/dv is 0 below its variance floor.

Rectifier, a ~ N(m, v), s = sqrt(v), r = m / s (Section 2.3.3): with E[y^2] = (m^2 + v) Phi(r) +
m s phi(r), the derivatives of Gaussian expectations (dE[f(a)]/dm = E[f'(a)],
dE[f(a)]/dv = E[f''(a)] / 2) give dE/dm = Phi, dE/dv = phi / (2 s), dE[y^2]/dm = 2 E,
dE[y^2]/dv = Phi, so dV/dm = 2 E (1 - Phi) and dV/dv = Phi - E phi / s. At v = 0 (relu):
dE/dm = 1{m > 0}, the rest 0.

Sigmoid (Wang and Manning's approximation): with s1 = sqrt(1 + c v), w = m / s1, E = sigma(w),
s2 = sqrt(1 + c alpha^2 v), z = alpha (m + beta) / s2, Q = sigma(z), V = Q - E^2 (c = pi / 8):
dE/dm = E (1 - E) / s1, dE/dv = -E (1 - E) w c / (2 s1^2), dQ/dm = Q (1 - Q) alpha / s2,
dQ/dv = -Q (1 - Q) z c alpha^2 / (2 s2^2), dV/d. = dQ/d. - 2 E dE/d..
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trainables.nn import variance
from trainables.nn.variance import ALPHA, BETA, PROBIT_SCALE, RATIO_LIMIT

Tensor = torch.Tensor


class Jacobian(NamedTuple):
    """The partial derivatives of a rule's output moments (E, V) by its input moments (m, v)."""

    mean_mean: Tensor  # dE/dm
    mean_var: Tensor  # dE/dv
    var_mean: Tensor  # dV/dm
    var_var: Tensor  # dV/dv


def chain(jacobian: Jacobian, grad_mean: Tensor, grad_var: Tensor) -> tuple[Tensor, Tensor]:
    """The gradient at the rule's input (m, v) from the gradient at its output (E, V)."""
    grad_m = torch.mul(grad_mean, jacobian.mean_mean).addcmul_(grad_var, jacobian.var_mean)
    grad_v = torch.mul(grad_mean, jacobian.mean_var).addcmul_(grad_var, jacobian.var_var)
    return grad_m, grad_v


def _gaussian_rectifier(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Jacobian]:
    """`variance._gaussian_rectifier` (the same operations) and its Jacobian (module docstring)."""
    std = var.sqrt()
    ratio = (mean / std).clamp(-RATIO_LIMIT, RATIO_LIMIT)
    cdf = torch.special.ndtr(ratio)
    pdf = torch.exp(-0.5 * ratio.square()) * variance._INV_SQRT_2PI
    mean_y = cdf * mean + pdf * std
    second_moment = (mean.square() + var) * cdf + mean * std * pdf
    raw = second_moment - mean_y.square()
    kept = raw >= 0  # clamp_min passes the gradient where its input is at least the bound
    pdf_over_std = pdf / std
    var_mean = torch.rsub(cdf, 1.0).mul_(mean_y).mul_(2.0).mul_(kept)
    var_var = torch.addcmul(cdf, mean_y, pdf_over_std, value=-1.0).mul_(kept)
    return mean_y, raw.clamp_min(0.0), Jacobian(cdf, pdf_over_std.mul_(0.5), var_mean, var_var)


def rectifier(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Jacobian]:
    """`variance.rectifier(mean, var)` and its Jacobian."""
    floor = torch.finfo(var.dtype).tiny ** 0.5
    if variance._unmasked(var, floor):
        return _gaussian_rectifier(mean, var)
    random = var > 0
    var_safe = torch.where(random, var, torch.ones_like(var)).clamp_min(floor)
    mean_g, var_g, jac = _gaussian_rectifier(mean, var_safe)
    moves = random & (var >= floor)  # where the gradient reaches var through the floor and the mask
    zero = torch.zeros_like(var_g)
    return (torch.where(random, mean_g, torch.relu(mean)), torch.where(random, var_g, zero),
            Jacobian(torch.where(random, jac.mean_mean, (mean > 0).to(mean.dtype)), jac.mean_var * moves,
                     jac.var_mean * random, jac.var_var * moves))


def sigmoid(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Jacobian]:
    """`variance.sigmoid(mean, var)` (the same operations) and its Jacobian."""
    scale = torch.sqrt(1.0 + PROBIT_SCALE * var)  # s1
    scaled = mean / scale  # w
    mean_y = torch.sigmoid(scaled)
    shifted = ALPHA * (mean + BETA)
    scale_2 = torch.sqrt(1.0 + PROBIT_SCALE * (ALPHA**2 * var))  # s2
    z = shifted / scale_2
    second = torch.sigmoid(z)  # Q
    raw = second - mean_y.square()
    kept = (raw >= 0) & (var > 0)
    slope = mean_y * (1.0 - mean_y) / scale  # dE/dm
    slope_2 = second * (1.0 - second) / scale_2  # dQ/dm / alpha
    mean_var = slope * scaled / scale * (-0.5 * PROBIT_SCALE)
    second_var = slope_2 * z / scale_2 * (-0.5 * PROBIT_SCALE * ALPHA**2)
    var_mean = torch.addcmul(slope_2 * ALPHA, mean_y, slope, value=-2.0).mul_(kept)
    var_var = torch.addcmul(second_var, mean_y, mean_var, value=-2.0).mul_(kept)
    var_y = raw.clamp_min(0.0)
    return mean_y, torch.where(var > 0, var_y, torch.zeros_like(var_y)), Jacobian(slope, mean_var, var_mean, var_var)


RULES = {"rectifier": rectifier, "sigmoid": sigmoid}
