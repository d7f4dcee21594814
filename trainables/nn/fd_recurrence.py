"""The FD-RNN recurrence of sigmoid units, and of units whose dropout rate is learned, written out.

`FDRecurrence.apply(in_mean, in_var, w_rec, keep, transfer)` is the loop of
`recurrent.FastDropoutRNN._fd_hidden` for the cases `recurrent.FDTanhRecurrence` does not take:
`transfer="sigmoid"` (STORN's nets, Section 4.4.1) and a `keep` that is a learned 0-d tensor
(STORN's recognition net learns its dropout rates, Section 4.4), with either transfer. For every
step t, with h_0 = 0,

    a_mean_t = in_mean_t + keep (E[h_{t-1}] W_rec^T),
    a_var_t  = in_var_t + (keep V[h_{t-1}] + keep (1 - keep) E[h_{t-1}]^2) (W_rec^2)^T,
    (E[h_t], V[h_t]) = the transfer's moments of N(a_mean_t, a_var_t)   (`variance`),

the same operations as the autograd loop, so the same numbers (tests/test_fd_recurrence.py
compares them with `==`). The backward pass is backpropagation through time by hand: the
transfer's partial derivatives for all steps at once after the loop (`moment_jacobians.sigmoid`,
`variance.tanh_backward_into`), two (B, H) x (H, H) products per step, W_rec's gradient as two
products over all steps, and the learned keep's gradient

    dL/dkeep = sum_t <dL/da_mean_t, E[h_{t-1}] W_rec^T>
                     + <dL/da_var_t, (V[h_{t-1}] + (1 - 2 keep) E[h_{t-1}]^2) (W_rec^2)^T>
             = <W_rec, G_mean^T E[h]> + sum_t <dL/dvar_in_t, V[h_{t-1}] + (1 - 2 keep) E[h_{t-1}]^2>,

with G_mean^T E[h] the product W_rec's gradient needs anyway and dL/dvar_in_t = dL/da_var_t W_rec^2,
computed in the loop. Autograd records some 20 operations per step and keeps their outputs for
its backward, which for STORN's two 300-unit nets cost more than their products; the partial
derivatives are closed forms, so gradients equal autograd's up to float rounding (1e-12 in
float64, the tests).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from trainables.nn import moment_jacobians
from trainables.nn import variance as vp
from trainables.nn.variance import ALPHA, BETA, PROBIT_SCALE

Transfer = Literal["tanh", "sigmoid"]
# the sigmoid's partial derivatives are computed for as many steps at once as hold this many numbers
# per tensor (~1 MB): all of a solo batch's steps, or a few of a cohort's, whose (T, K, B, H)
# temporaries would otherwise each be tens of MB, fresh pages from the kernel every minibatch
JACOBIAN_ELEMENTS = 2**18


def sigmoid_into(mean: Tensor, var: Tensor, out_mean: Tensor, out_var: Tensor) -> tuple[Tensor, Tensor]:
    """`variance.sigmoid(mean, var)` written into `out_mean`, `out_var`: the same operations on the
    same operands, in place where `sigmoid` allocates, bit for bit (its closing `torch.where(var > 0,
    x, 0)` as x * sign(var), as `variance.tanh_into` does)."""
    scale = torch.mul(var, PROBIT_SCALE).add_(1.0).sqrt_()  # sqrt(1 + pi v / 8)
    mean_y = torch.div(mean, scale, out=out_mean).sigmoid_()
    # _sigmoid_second_moment: sigma(alpha (m + beta) / sqrt(1 + pi alpha^2 v / 8))
    second = torch.add(mean, BETA).mul_(ALPHA)
    second.div_(torch.mul(var, ALPHA**2).mul_(PROBIT_SCALE).add_(1.0).sqrt_()).sigmoid_()
    var_y = second.sub_(mean_y.square()).clamp_min_(0.0)
    return mean_y, torch.mul(var_y, torch.sign(var), out=out_var)


_INTO = {"sigmoid": sigmoid_into, "tanh": vp.tanh_into}


class FDRecurrence(torch.autograd.Function):
    """forward(in_mean, in_var: (T, B, H), w_rec: (H, H), keep: float or 0-d tensor, transfer)
    -> (E[h], V[h]): (T, B, H) each (module docstring).

    With a member axis (a cohort's K nets at once, `trainables.kit.storn_stack`): in_mean, in_var
    (T, K, B, H), w_rec (K, H, H), keep a float or a (K, 1, 1) tensor; every product is then one
    batched product over the members, and W_rec's and keep's gradients are each member's own.
    `active` (with a member axis): for every step, how many members, from the first, run it
    (non-increasing: members ordered by their sequences' lengths, longest first); the rows of
    the others stay 0 and take no gradient."""

    @staticmethod
    def forward(ctx, in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: float | Tensor, transfer: Transfer,
                active: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        if transfer not in _INTO:
            raise ValueError(f"transfer must be one of {', '.join(_INTO)}, got {transfer!r}")
        into = _INTO[transfer]
        w_rec_sq = w_rec.square()
        new = torch.empty_like if active is None else torch.zeros_like  # rows past a member's end stay 0
        a_means, a_vars, means, variances = new(in_mean), new(in_var), new(in_mean), new(in_var)
        var_ins = new(in_var)  # keep V[h_{t-1}] + keep (1 - keep) E[h_{t-1}]^2
        h_mean = in_mean.new_zeros(in_mean.shape[1:])
        h_var = torch.zeros_like(h_mean)
        rows = _Rows(w_rec.transpose(-2, -1), w_rec_sq.transpose(-2, -1), keep, keep * (1.0 - keep))
        for t in range(in_mean.shape[0]):
            n = None if active is None else active[t]
            w_t, w_sq_t, keep_n, noise = rows[n]
            h_mean, h_var = h_mean[:n], h_var[:n]
            a_mean = torch.add(in_mean[t, :n], (h_mean @ w_t).mul_(keep_n), out=a_means[t, :n])
            var_in = torch.add(torch.mul(h_var, keep_n), h_mean.square().mul_(noise), out=var_ins[t, :n])
            a_var = torch.add(in_var[t, :n], var_in @ w_sq_t, out=a_vars[t, :n])
            h_mean, h_var = into(a_mean, a_var, means[t, :n], variances[t, :n])
        learned = isinstance(keep, Tensor)
        ctx.transfer, ctx.keep, ctx.active = transfer, None if learned else keep, active
        ctx.save_for_backward(a_means, a_vars, means, variances, var_ins, w_rec, keep if learned else None)
        return means, variances

    @staticmethod
    def backward(ctx, grad_means: Tensor, grad_variances: Tensor):
        a_means, a_vars, means, variances, var_ins, w_rec, keep_tensor = ctx.saved_tensors
        keep = ctx.keep if keep_tensor is None else keep_tensor.detach()
        learned = keep_tensor is not None and ctx.needs_input_grad[3]
        active = ctx.active
        w_rec_sq = w_rec.square()
        new = torch.empty_like if active is None else torch.zeros_like
        grad_a_means, grad_a_vars = new(a_means), new(a_vars)
        grad_var_ins = torch.zeros_like(a_vars) if learned else None  # dL/dvar_in_t, t >= 1
        step_back = _step_back(ctx.transfer, a_means, a_vars, means, grad_a_means, grad_a_vars)
        rows = _Rows(w_rec, w_rec_sq, keep, 2.0 * keep * (1.0 - keep))
        last = None if active is None else active[-1]
        grad_h_mean, grad_h_var = grad_means[-1, :last], grad_variances[-1, :last]
        for t in range(a_means.shape[0] - 1, -1, -1):
            n = None if active is None else active[t]
            grad_a_mean, grad_a_var = step_back(t, n, grad_h_mean, grad_h_var)
            if t == 0:
                break
            w, w_sq, keep_n, twice_noise = rows[n]
            grad_var_in = torch.matmul(grad_a_var, w_sq, out=grad_var_ins[t, :n] if learned else None)
            grad_h_mean = (grad_means[t - 1, :n] + keep_n * (grad_a_mean @ w)
                           + twice_noise * grad_var_in * means[t - 1, :n])
            grad_h_var = grad_variances[t - 1, :n] + keep_n * grad_var_in
            if active is not None and active[t - 1] > n:  # members whose sequences end at step t - 1
                grad_h_mean = torch.cat([grad_h_mean, grad_means[t - 1, n:active[t - 1]]])
                grad_h_var = torch.cat([grad_h_var, grad_variances[t - 1, n:active[t - 1]]])
        mean_product = _step_products(grad_a_means[1:], means[:-1])  # G_mean^T E[h_{t-1}]; h_0 = 0 adds nothing
        grad_w = keep * mean_product
        grad_w += 2.0 * w_rec * _step_products(grad_a_vars[1:], var_ins[1:])
        grad_keep = None
        if learned:
            slope = torch.addcmul(variances[:-1], means[:-1].square(), 1.0 - 2.0 * keep)  # d var_in / d keep
            per_step = (grad_var_ins[1:] * slope).sum((-2, -1))  # (T-1,) or (T-1, K)
            grad_keep = ((w_rec * mean_product).sum((-2, -1)) + per_step.sum(0)).reshape(keep_tensor.shape)
        return grad_a_means, grad_a_vars, grad_w, grad_keep, None, None


class _Rows:
    """(matrix, squared matrix, keep, noise term) of the first n members (all for n = None), sliced once per n."""

    def __init__(self, w: Tensor, w_sq: Tensor, keep: float | Tensor, noise: float | Tensor):
        self.values, self.cache = (w, w_sq, keep, noise), {}

    def __getitem__(self, n: int | None) -> tuple:
        if n not in self.cache:
            self.cache[n] = tuple(v if n is None or not isinstance(v, Tensor) or v.dim() < 3 else v[:n]
                                  for v in self.values)
        return self.cache[n]


def _step_products(grads: Tensor, values: Tensor) -> Tensor:
    """sum_t grads_t^T values_t: (H, H) from (T, B, H) tensors, (K, H, H) from (T, K, B, H) ones."""
    if grads.dim() == 3:
        return grads.reshape(-1, grads.shape[-1]).T @ values.reshape(-1, values.shape[-1])
    rows = lambda x: x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1])  # noqa: E731  (K, T*B, H)
    return rows(grads).transpose(-2, -1) @ rows(values)


def _step_back(transfer: Transfer, a_means: Tensor, a_vars: Tensor, means: Tensor, grad_a_means: Tensor,
               grad_a_vars: Tensor):
    """`step_back(t, n, dL/dE[h_t], dL/dV[h_t])` -> (dL/da_mean_t, dL/da_var_t) of the first n rows
    of step t (all for n = None), written into the buffers."""
    if transfer == "tanh":
        return lambda t, n, grad_mean, grad_var: vp.tanh_backward_into(
            a_means[t, :n], a_vars[t, :n], means[t, :n], grad_mean, grad_var, grad_a_means[t, :n], grad_a_vars[t, :n])
    per_step = a_means[0].numel()
    chunk = max(1, JACOBIAN_ELEMENTS // per_step)
    held: dict[str, Any] = {"start": a_means.shape[0]}

    def step_back(t: int, n: int | None, grad_mean: Tensor, grad_var: Tensor) -> tuple[Tensor, Tensor]:
        if t < held["start"]:  # the partial derivatives of the next chunk of steps (going back), at once
            start = max(0, t + 1 - chunk)
            held["start"] = start
            held["jacobian"] = moment_jacobians.sigmoid(a_means[start:t + 1], a_vars[start:t + 1])[2]
        jacobian, i = held["jacobian"], t - held["start"]
        grad_a_mean = torch.mul(grad_mean, jacobian.mean_mean[i, :n], out=grad_a_means[t, :n])
        grad_a_mean.addcmul_(grad_var, jacobian.var_mean[i, :n])
        grad_a_var = torch.mul(grad_mean, jacobian.mean_var[i, :n], out=grad_a_vars[t, :n])
        return grad_a_mean, grad_a_var.addcmul_(grad_var, jacobian.var_var[i, :n])

    return step_back
