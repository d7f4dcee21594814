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
products over all steps (`recurrent.w_rec_gradient`), and the learned keep's gradient

    dL/dkeep = sum_t <dL/da_mean_t, E[h_{t-1}] W_rec^T> + <dL/da_var_t, (V[h_{t-1}] + (1 - 2 keep) E[h_{t-1}]^2) (W_rec^2)^T>
             = <W_rec, G_mean^T E[h]> + sum_t <dL/dvar_in_t, V[h_{t-1}] + (1 - 2 keep) E[h_{t-1}]^2>,

with G_mean^T E[h] the product W_rec's gradient needs anyway and dL/dvar_in_t = dL/da_var_t W_rec^2,
computed in the loop. Autograd records some 20 operations per step and keeps their outputs for
its backward, which for STORN's two 300-unit nets cost more than their products; the partial
derivatives are closed forms, so gradients equal autograd's up to float rounding (1e-12 in
float64, the tests).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from trainables.nn import moment_jacobians
from trainables.nn import variance as vp
from trainables.nn.variance import ALPHA, BETA, PROBIT_SCALE

Transfer = Literal["tanh", "sigmoid"]


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
    -> (E[h], V[h]): (T, B, H) each (module docstring)."""

    @staticmethod
    def forward(ctx, in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: float | Tensor,
                transfer: Transfer) -> tuple[Tensor, Tensor]:
        if transfer not in _INTO:
            raise ValueError(f"transfer must be one of {', '.join(_INTO)}, got {transfer!r}")
        into = _INTO[transfer]
        w_rec_sq = w_rec.square()
        a_means, a_vars = torch.empty_like(in_mean), torch.empty_like(in_var)
        means, variances = torch.empty_like(in_mean), torch.empty_like(in_var)
        var_ins = torch.empty_like(in_var)  # keep V[h_{t-1}] + keep (1 - keep) E[h_{t-1}]^2
        h_mean = in_mean.new_zeros(in_mean.shape[1:])
        h_var = torch.zeros_like(h_mean)
        noise = keep * (1.0 - keep)
        for t in range(in_mean.shape[0]):
            a_mean = torch.add(in_mean[t], (h_mean @ w_rec.T).mul_(keep), out=a_means[t])
            var_in = torch.add(torch.mul(h_var, keep), h_mean.square().mul_(noise), out=var_ins[t])
            a_var = torch.add(in_var[t], var_in @ w_rec_sq.T, out=a_vars[t])
            h_mean, h_var = into(a_mean, a_var, means[t], variances[t])
        learned = isinstance(keep, Tensor)
        ctx.transfer, ctx.keep = transfer, None if learned else keep
        ctx.save_for_backward(a_means, a_vars, means, variances, var_ins, w_rec, keep if learned else None)
        return means, variances

    @staticmethod
    def backward(ctx, grad_means: Tensor, grad_variances: Tensor):
        a_means, a_vars, means, variances, var_ins, w_rec, keep_tensor = ctx.saved_tensors
        learned = keep_tensor is not None
        keep = keep_tensor.detach() if learned else ctx.keep
        w_rec_sq = w_rec.square()
        grad_a_means, grad_a_vars = torch.empty_like(a_means), torch.empty_like(a_vars)
        grad_var_ins = torch.zeros_like(a_vars) if learned else None  # dL/dvar_in_t, t >= 1
        step_back = _step_back(ctx.transfer, a_means, a_vars, means, grad_a_means, grad_a_vars)
        grad_h_mean, grad_h_var = grad_means[-1], grad_variances[-1]
        for t in range(a_means.shape[0] - 1, -1, -1):
            grad_a_mean, grad_a_var = step_back(t, grad_h_mean, grad_h_var)
            if t == 0:
                break
            grad_var_in = torch.matmul(grad_a_var, w_rec_sq, out=grad_var_ins[t] if learned else None)
            grad_h_mean = (grad_means[t - 1] + keep * (grad_a_mean @ w_rec)
                           + (2.0 * keep * (1.0 - keep)) * grad_var_in * means[t - 1])
            grad_h_var = grad_variances[t - 1] + keep * grad_var_in
        rows = lambda x: x[1:].reshape(-1, w_rec.shape[0])  # noqa: E731  steps 1..T-1; h_0 = 0 adds nothing
        mean_product = rows(grad_a_means).T @ means[:-1].reshape(-1, w_rec.shape[0])  # G_mean^T E[h_{t-1}]
        grad_w = keep * mean_product
        grad_w += 2.0 * w_rec * (rows(grad_a_vars).T @ rows(var_ins))
        grad_keep = None
        if learned and ctx.needs_input_grad[3]:
            slope = torch.addcmul(variances[:-1], means[:-1].square(), 1.0 - 2.0 * keep)  # d var_in / d keep
            grad_keep = ((w_rec * mean_product).sum() + (grad_var_ins[1:] * slope).sum()).reshape(keep_tensor.shape)
        return grad_a_means, grad_a_vars, grad_w, grad_keep, None


def _step_back(transfer: Transfer, a_means: Tensor, a_vars: Tensor, means: Tensor, grad_a_means: Tensor,
               grad_a_vars: Tensor):
    """`step_back(t, dL/dE[h_t], dL/dV[h_t])` -> (dL/da_mean_t, dL/da_var_t), written into the buffers."""
    if transfer == "tanh":
        return lambda t, grad_mean, grad_var: vp.tanh_backward_into(a_means[t], a_vars[t], means[t], grad_mean,
                                                                    grad_var, grad_a_means[t], grad_a_vars[t])
    jacobian = moment_jacobians.sigmoid(a_means, a_vars)[2]  # every step's partial derivatives at once

    def step_back(t: int, grad_mean: Tensor, grad_var: Tensor) -> tuple[Tensor, Tensor]:
        grad_a_mean = torch.mul(grad_mean, jacobian.mean_mean[t], out=grad_a_means[t])
        grad_a_mean.addcmul_(grad_var, jacobian.var_mean[t])
        grad_a_var = torch.mul(grad_mean, jacobian.mean_var[t], out=grad_a_vars[t])
        return grad_a_mean, grad_a_var.addcmul_(grad_var, jacobian.var_var[t])

    return step_back
