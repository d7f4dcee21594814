"""Variance propagation (VP): moments of affine maps and transfer functions, Sections 2.3 and 2.5.

Every quantity is a pair (mean, var) of tensors of the same shape, features last, any leading shape,
float32 or float64; everything is plain torch and differentiable. The rules:

- `product`: Eqs. (14)/(15), E and V of a product of independent A and B (the LSTM gates, 2.4.2.1).
- `gaussian_affine`: Eqs. (17)/(18), a = x W^T + b with Gaussian weights and bias (Section 2.3.2).
- `fd_affine`: fast dropout on the inputs of a layer (Section 2.5, Wang and Manning, 2013):
  x~ = zeta * x with zeta_i ~ B(keep), keep = 1 - d for the dropout rate d, no rescaling, so
  E[x~] = keep E[x] and V[x~] = keep V[x] + keep (1 - keep) E[x]^2, then Eqs. (17)/(18) with
  deterministic weights.
- `rectifier`, `sigmoid`, `tanh`, `identity`: post-synaptic moments, Eqs. (19)/(20), of
  y = f(a) with a ~ N(mean, var) (Section 2.3.3). The rectifier's are exact; the sigmoid's are
  Wang and Manning's (2013) approximations, which the thesis quotes:
  E[sigma(a)] ~ sigma(m / sqrt(1 + pi v / 8)) and, from sigma(x)^2 ~ sigma(alpha (x + beta)) with
  alpha = 4 - 2 sqrt(2), beta = -log(sqrt(2) + 1) (the thesis writes a (E[a] - b) with
  b = -log(sqrt(2) - 1), the same number with the opposite sign), E[sigma(a)^2] ~
  sigma(alpha (m + beta) / sqrt(1 + pi alpha^2 v / 8)).

Assumptions (the thesis's): the components of the input, of the weights, of the bias and of the
dropout masks are all mutually independent, and each pre-synaptic activation is Gaussian (the
central limit theorem, Section 2.3.2). Transfer functions act on each component as if the
components of `a` were independent, which they are not in general (Section 2.4.1).

Where this differs from the thesis and from its authors' code (breze):

- The thesis writes V[y] = ... - E[a]^2 for both the rectifier and the sigmoid in Section 2.3.3;
  the variance is E[y^2] - E[y]^2, which is what is computed here (and in breze).
- The fast dropout mean is scaled by the keep probability 1 - d (Section 2.5's first equations).
  Section 2.5.1.1 writes E[a] = (d x)^T w, and the original code likewise scaled by the dropout
  rate; that is a slip and is not copied.
- tanh uses tanh(x) = 2 sigma(2x) - 1, i.e. the sigmoid rule applied to (2m, 4v). breze applied
  the sigmoid rule to (m, v) and mapped 2 E - 1, which are the moments of 2 sigma(x) - 1, a
  different function; that is not copied.
- Variances that the sigmoid approximation or floating point cancellation would make negative are
  clamped at 0. The sigmoid's second-moment approximation is not exact at zero input variance
  (it would give sigma(alpha (m + beta)) - sigma(m)^2, up to ~0.027, the error of the fit
  sigma(x)^2 ~ sigma(alpha (x + beta))); sigmoid and tanh return the exact 0 there instead, so
  that a deterministic input stays deterministic through a recurrent net.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Moments = tuple[Tensor, Tensor]

ALPHA = 4.0 - 2.0 * math.sqrt(2.0)  # sigma(x)^2 ~ sigma(ALPHA (x + BETA)), Wang and Manning (2013)
BETA = -math.log(math.sqrt(2.0) + 1.0)  # places sigma(ALPHA (x + BETA)) = 1/2 where sigma(x)^2 = 1/2
PROBIT_SCALE = math.pi / 8.0  # sigma(x) ~ Phi(sqrt(pi / 8) x): E[sigma(a)] ~ sigma(m / sqrt(1 + v pi / 8))
# |m| / std beyond this has Phi = 0 or 1 and phi = 0 in float64; clamping the ratio there keeps
# its gradient finite as var -> 0 without changing any value.
RATIO_LIMIT = 40.0

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _var_or_zeros(mean: Tensor, var: Optional[Tensor]) -> Tensor:
    return torch.zeros_like(mean) if var is None else var


def product(mean_a: Tensor, var_a: Optional[Tensor], mean_b: Tensor, var_b: Optional[Tensor]) -> Moments:
    """E and V of A * B for independent A, B (Eqs. 14, 15): E = E[A] E[B],
    V = E[A]^2 V[B] + V[A] E[B]^2 + V[A] V[B]. A None variance is a deterministic factor."""
    mean = mean_a * mean_b
    if var_a is None and var_b is None:
        return mean, torch.zeros_like(mean)
    if var_a is None:
        return mean, mean_a.square() * var_b
    if var_b is None:
        return mean, var_a * mean_b.square()
    return mean, mean_a.square() * var_b + var_a * mean_b.square() + var_a * var_b


def gaussian_affine(
    mean: Tensor,
    var: Optional[Tensor],
    w_mean: Tensor,
    w_var: Tensor,
    b_mean: Optional[Tensor] = None,
    b_var: Optional[Tensor] = None,
) -> Moments:
    """Moments of a = x W^T + b with independent Gaussian weights and bias (Eqs. 17, 18).

    w_mean, w_var: (out, in), nn.Linear's layout; b_mean, b_var: (out,) or None (no bias / no bias
    noise); mean, var: (..., in), var None for a deterministic input. Returns (..., out) each:
    E[a] = E[x] E[W]^T + E[b],
    V[a] = V[x] (E[W]^2 + V[W])^T + E[x]^2 V[W]^T + V[b]   (Eq. 18's three sums, two grouped).
    """
    mean_a = F.linear(mean, w_mean, b_mean)
    var_a = F.linear(mean.square(), w_var)
    if var is not None:
        var_a = var_a + F.linear(var, w_mean.square() + w_var)
    if b_var is not None:
        var_a = var_a + b_var
    return mean_a, var_a


def fd_affine(
    mean: Tensor,
    var: Optional[Tensor],
    weight: Tensor,
    bias: Optional[Tensor] = None,
    keep: Union[float, Tensor] = 1.0,
) -> Moments:
    """Moments of a = (x * zeta) W^T + b, zeta_i ~ B(keep) independently per input (Section 2.5).

    Fast dropout on the layer's inputs without rescaling: keep = 1 - d is the probability that an
    input is kept (the thesis's d is the dropout rate). weight: (out, in); bias: (out,) or None;
    keep: a float in [0, 1] or a tensor broadcastable to (..., in). mean, var: (..., in), var None
    for a deterministic input. Returns (..., out) each:
    E[a] = keep E[x] W^T + b,
    V[a] = (keep V[x] + keep (1 - keep) E[x]^2) (W^2)^T.
    """
    if not isinstance(keep, Tensor) and not 0.0 <= keep <= 1.0:
        raise ValueError(f"fd_affine: the keep probability must satisfy 0 <= keep <= 1, but got keep={keep}")
    mean_a = F.linear(keep * mean, weight, bias)
    if not isinstance(keep, Tensor) and keep == 1.0:
        var_in = var  # no dropout noise: only the input's own variance passes through
    else:
        var_in = keep * (1.0 - keep) * mean.square()
        if var is not None:
            var_in = var_in + keep * var
    if var_in is None:
        return mean_a, torch.zeros_like(mean_a)
    return mean_a, F.linear(var_in, weight.square())


def identity(mean: Tensor, var: Optional[Tensor]) -> Moments:
    """f(a) = a: the moments pass through unchanged."""
    return mean, _var_or_zeros(mean, var)


def rectifier(mean: Tensor, var: Optional[Tensor]) -> Moments:
    """Exact moments of max(0, a), a ~ N(m, v) (Section 2.3.3), with s = sqrt(v), r = m / s:
    E[y] = Phi(r) m + phi(r) s, E[y^2] = (m^2 + v) Phi(r) + m s phi(r), V[y] = E[y^2] - E[y]^2.

    At v = 0 the result is exactly (max(0, m), 0), with d/dm = 1{m > 0} and d/dv = 0 there (the
    true d/dv diverges at m = v = 0).

    On the CPU, where every variance is at least the floor below (as a rule under fast dropout),
    the masks that handle v = 0 are skipped: they would select the Gaussian branch everywhere and
    pass its gradient unchanged, so the values and gradients are the same bits, from about a
    fifth fewer operations and autograd nodes (FD and IVN rectifier trials 10-15% faster). On
    another device the check would cost a synchronisation per layer and step, so it is not made.
    """
    if var is None:
        return torch.relu(mean), torch.zeros_like(mean)
    floor = torch.finfo(var.dtype).tiny ** 0.5
    if _unmasked(var, floor):
        return _gaussian_rectifier(mean, var)
    random = var > 0
    # Both branches of torch.where are differentiated: the placeholder 1 keeps the Gaussian branch
    # finite where var == 0, and the floor keeps m / s / s (in the ratio's gradient) finite for
    # subnormal var. The floor moves E[y] by at most phi(0) tiny^(1/4) (1.3e-10 in float32).
    var_safe = torch.where(random, var, torch.ones_like(var)).clamp_min(floor)
    mean_y, var_y = _gaussian_rectifier(mean, var_safe)
    return torch.where(random, mean_y, torch.relu(mean)), torch.where(random, var_y, torch.zeros_like(var_y))


def _unmasked(var: Tensor, floor: float) -> bool:
    """Whether `rectifier` may skip its masks: a CPU tensor with every variance >= floor (NaN: no)."""
    return var.device.type == "cpu" and var.numel() > 0 and bool(var.min() >= floor)


def _gaussian_rectifier(mean: Tensor, var: Tensor) -> Moments:
    """`rectifier`'s Gaussian branch for variances at or above its floor."""
    std = var.sqrt()
    ratio = (mean / std).clamp(-RATIO_LIMIT, RATIO_LIMIT)
    cdf = torch.special.ndtr(ratio)
    pdf = torch.exp(-0.5 * ratio.square()) * _INV_SQRT_2PI
    mean_y = cdf * mean + pdf * std
    second_moment = (mean.square() + var) * cdf + mean * std * pdf
    return mean_y, (second_moment - mean_y.square()).clamp_min(0.0)  # cancellation can go just below 0


def _scaled_sigmoid(mean: Tensor, var: Tensor) -> Tensor:
    """The thesis's sigma(m, v) = sigma(m / sqrt(1 + pi v / 8)) ~ E[sigma(a)], a ~ N(m, v)."""
    return torch.sigmoid(mean / torch.sqrt(1.0 + PROBIT_SCALE * var))


def _sigmoid_second_moment(mean: Tensor, var: Tensor) -> Tensor:
    """E[sigma(a)^2] ~ sigma(alpha (m + beta), alpha^2 v) (Wang and Manning, 2013)."""
    return _scaled_sigmoid(ALPHA * (mean + BETA), ALPHA**2 * var)


def sigmoid(mean: Tensor, var: Optional[Tensor]) -> Moments:
    """Approximate moments of sigma(a), a ~ N(m, v) (Section 2.3.3, Wang and Manning, 2013):
    E[y] ~ sigma(m / sqrt(1 + pi v / 8)),
    V[y] ~ max(0, sigma(alpha (m + beta) / sqrt(1 + pi alpha^2 v / 8)) - E[y]^2).

    At v = 0 the moments are exact: E[y] = torch.sigmoid(m) and V[y] = 0. (The second-moment fit
    alone would leave up to 0.027 of spurious variance there, which a recurrent net would feed
    back into its next step: FD with every rate 0 would then differ from the deterministic net.)
    """
    var = _var_or_zeros(mean, var)
    mean_y = _scaled_sigmoid(mean, var)
    var_y = (_sigmoid_second_moment(mean, var) - mean_y.square()).clamp_min(0.0)
    return mean_y, torch.where(var > 0, var_y, torch.zeros_like(var_y))


def tanh(mean: Tensor, var: Optional[Tensor]) -> Moments:
    """Approximate moments of tanh(a), a ~ N(m, v), through tanh(a) = 2 sigma(2a) - 1:
    with b = 2a ~ N(2m, 4v), E[y] = 2 E[sigma(b)] - 1 and V[y] = 4 V[sigma(b)].

    2 sigma(z) - 1 = tanh(z / 2) turns the mean into tanh(m / sqrt(1 + pi v / 2)), which is exactly
    torch.tanh(m) at v = 0 and avoids cancelling 2 * 0.5 - 1 near m = 0 in float32.
    """
    # Not 2 sigma(a) - 1 on (m, v), as the thesis authors' code (breze) did: that is the moments
    # of 2 sigma(a) - 1 = tanh(a / 2), a different function.
    var = _var_or_zeros(mean, var)
    mean_b, var_b = 2.0 * mean, 4.0 * var
    mean_y = torch.tanh(mean / torch.sqrt(1.0 + PROBIT_SCALE * var_b))
    mean_sigma_b = 0.5 * (mean_y + 1.0)  # E[sigma(b)], the same value as _scaled_sigmoid(mean_b, var_b)
    var_sigma_b = (_sigmoid_second_moment(mean_b, var_b) - mean_sigma_b.square()).clamp_min(0.0)
    return mean_y, torch.where(var > 0, 4.0 * var_sigma_b, torch.zeros_like(var_sigma_b))  # exact at v = 0


def tanh_into(mean: Tensor, var: Tensor, out_mean: Tensor, out_var: Tensor) -> Moments:
    """`tanh(mean, var)` written into `out_mean`, `out_var` (the same numbers, bit for bit: the same
    operations on the same operands, in place where `tanh` allocates, and the closing
    `torch.where(var > 0, x, 0)` as x * sign(var), which equals it for a variance (var >= 0) and
    the finite x >= 0 it masks). For the FD-RNN recurrences, solo (`recurrent.FDTanhRecurrence`)
    and stacked (`stacked_loops.recur`), which call it once per step with no autograd to feed:
    on (32, 600) blocks a third fewer allocations, and no `torch.where`, whose CPU kernel is not
    vectorised."""
    var_b = torch.mul(var, 4.0)
    scale = torch.mul(var_b, PROBIT_SCALE).add_(1.0).sqrt_()  # sqrt(1 + pi var_b / 8)
    mean_y = torch.div(mean, scale, out=out_mean).tanh_()
    mean_sigma_b = torch.add(mean_y, 1.0).mul_(0.5)
    # _sigmoid_second_moment(2m, 4v): sigma(alpha (2m + beta) / sqrt(1 + pi alpha^2 4v / 8))
    second = torch.mul(mean, 2.0).add_(BETA).mul_(ALPHA)
    second.div_(var_b.mul_(ALPHA**2).mul_(PROBIT_SCALE).add_(1.0).sqrt_()).sigmoid_()
    var_sigma_b = second.sub_(mean_sigma_b.square_()).clamp_min_(0.0)
    return mean_y, torch.mul(var_sigma_b, 4.0, out=out_var).mul_(torch.sign(var))


def tanh_backward(mean: Tensor, var: Tensor, mean_y: Tensor, grad_mean_y: Tensor, grad_var_y: Tensor) -> Moments:
    """The gradient of `tanh` with respect to (mean, var), given its output mean_y and the gradients
    of its outputs: the chain rule through the same formula, written out for the FD-RNN recurrence
    (`recurrent.FDTanhRecurrence`), which runs without autograd's per-operation bookkeeping.

    With s1 = sqrt(1 + 4 c v), w = m / s1, y = tanh(w), s2 = sqrt(1 + 4 c alpha^2 v),
    z = alpha (2m + beta) / s2, q = sigma(z), r = q - ((y + 1) / 2)^2 and V = 4 max(r, 0) where v > 0:
    dy/dm = (1 - y^2) / s1, dy/dv = -(1 - y^2) w 2c / s1^2, dq/dm = q (1 - q) 2 alpha / s2,
    dq/dv = -q (1 - q) z 2 c alpha^2 / s2^2 (c = pi / 8); V passes the gradient where v > 0 and
    r >= 0, as torch.where and clamp_min do.
    """
    return tanh_backward_into(mean, var, mean_y, grad_mean_y, grad_var_y, torch.empty_like(mean),
                              torch.empty_like(var))


def tanh_backward_into(mean: Tensor, var: Tensor, mean_y: Tensor, grad_mean_y: Tensor, grad_var_y: Tensor,
                       out_mean: Tensor, out_var: Tensor) -> Moments:
    """`tanh_backward` written into `out_mean`, `out_var` (which the recurrences' BPTT keeps for all
    steps): the same operations, bit for bit, without the copy of two fresh results, which for a
    stacked cohort's (16, 16, 200) blocks left the cache on every step."""
    # fewer, in-place operations than the formula read off: this runs once per step and unit
    inv_s1 = torch.mul(var, 4.0 * PROBIT_SCALE).add_(1.0).rsqrt_()
    inv_s2 = torch.mul(var, 4.0 * PROBIT_SCALE * ALPHA**2).add_(1.0).rsqrt_()
    z = torch.mul(mean, 2.0 * ALPHA).add_(ALPHA * BETA).mul_(inv_s2)
    q = torch.sigmoid(z)
    mean_sigma_b = torch.add(mean_y, 1.0).mul_(0.5)
    passes = (var > 0).logical_and_(q >= mean_sigma_b.square())
    grad_r = torch.where(passes, grad_var_y, 0.0).mul_(4.0)
    t1 = torch.addcmul(grad_mean_y, grad_r, mean_sigma_b, value=-1.0).mul_(1.0 - mean_y.square()).mul_(inv_s1)
    t2 = grad_r.mul_(q).mul_(1.0 - q).mul_(inv_s2)
    grad_mean = torch.add(t1, t2, alpha=2.0 * ALPHA, out=out_mean)
    grad_var = torch.mul(t1, mean, out=out_var).mul_(inv_s1.square()).add_(t2.mul_(z).mul_(inv_s2), alpha=ALPHA**2)
    return grad_mean, grad_var.mul_(-2.0 * PROBIT_SCALE)


Transfer = Callable[[Tensor, Optional[Tensor]], Moments]
TRANSFERS: dict[str, Transfer] = {"identity": identity, "rectifier": rectifier, "sigmoid": sigmoid, "tanh": tanh}
