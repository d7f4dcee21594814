"""Regression losses with their gradients in closed form, the same bits as autograd's.

A cohort trainer (`trainables.kit.cohort_regression`) needs each member's minibatch loss and its
gradient at the network's output. Asking autograd for that gradient records the loss's few
operations and replays them backwards, which for minibatches of 10 costs more than the arithmetic
(about a tenth of a fast-dropout cohort's step). Here each loss is computed as its `Heads.loss`
computes it, and its gradient with the operations autograd's backward formulas perform, in the
same order and on the same operands, so that every bit equals autograd's (tests/test_loss_gradients.py
compares them with `torch.equal`):

- a mean over N entries hands each entry 1/N, computed as `ones / N` in the loss's dtype;
- x ** 2 hands back grad * (2 x); a / b: grad / b to a, -grad * ((a / b) / b) to b;
- log(c v) (c a Python float): (grad / (c v)) * c to v; clamp_min(v, floor): grad where v >= floor.

Each function takes the output of M stacked networks (M, n, w) and targets y (M, n, d) and
returns (loss (M,), gradient (M, n, w)): the gradient of the sum of the M losses, which gives
member k the gradient of its own loss alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _share(like: Tensor, count: int) -> Tensor:
    """1/count in `like`'s dtype, as a mean's backward computes it (`ones / count`)."""
    return torch.ones((), dtype=like.dtype, device=like.device) / count


def mean_squared_error(prediction: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """((prediction - y) ** 2).mean(dim=(-2, -1)) per member, and its gradient by `prediction`."""
    error = prediction - y
    loss = (error ** 2).mean(dim=(-2, -1))
    share = _share(error, error.shape[-2] * error.shape[-1])
    return loss, share * (2.0 * error)


def moments_squared_error(raw: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """FD's objective on a fast-dropout output [E[y] | V[y]] (M, n, 2d): the squared error of E[y]
    (the variance is not trained, its gradient is zero)."""
    mean = raw[..., : raw.shape[-1] // 2]
    loss, grad_mean = mean_squared_error(mean, y)
    return loss, torch.cat([grad_mean, torch.zeros_like(grad_mean)], dim=-1)


def moments_gaussian_nll(raw: Tensor, y: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """IVN's objective on [E[y] | V[y]] (M, n, 2d): the Gaussian NLL of E[y] and V[y] floored at
    `floor`, summed over outputs and averaged over points,
    mean_n 0.5 sum_d (log(2 pi v) + (y - m)^2 / v) (`trainables.nn.gaussian.gaussian_nll`)."""
    mean, raw_var = raw.chunk(2, dim=-1)
    var = raw_var.clamp_min(floor)
    two_pi = 2 * math.pi
    error = y - mean
    squared = error ** 2
    loss = (0.5 * (torch.log(two_pi * var) + squared / var).sum(dim=-1)).mean(dim=-1)
    half = _share(loss, mean.shape[-2]) * 0.5  # the mean over points, then the 0.5
    grad_mean, grad_var = _gaussian_nll_gradients(half, error, squared, var)
    grad_var = torch.where(raw_var >= floor, grad_var, 0.0)
    return loss, torch.cat([grad_mean, grad_var], dim=-1)


def _gaussian_nll_gradients(grad: Tensor, error: Tensor, squared: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """The gradients by the mean and the variance of 0.5 (log(2 pi v) + (y - m)^2 / v), given
    `grad` at that term and its forward's y - m, (y - m)^2 and v."""
    two_pi = 2 * math.pi
    grad_mean = -((grad / var) * (2.0 * error))
    grad_var = (grad / (two_pi * var)) * two_pi + -grad * ((squared / var) / var)
    return grad_mean, grad_var


def mixture_nll(raw: Tensor, y: Tensor, components: int, floor: float) -> tuple[Tensor, Tensor]:
    """DN's and MDN's objective (`trainables.mdn`): the mixture's NLL averaged over points, from
    the raw output [logits | means | variance pre-activations] (M, n, K + 2 K D), with
    log pi = log_softmax(logits), sigma^2 = softplus(pre-activation) + `floor`. The backward of
    log_softmax and softplus are ATen's own kernels (`torch.ops.aten`), as autograd calls them."""
    k = components
    d = y.shape[-1]
    logits, means, pre_variances = raw.split([k, k * d, k * d], dim=-1)
    log_pi = torch.log_softmax(logits, dim=-1)
    mu = means.reshape(*raw.shape[:-1], k, d)
    var = F.softplus(pre_variances).reshape(*raw.shape[:-1], k, d) + floor
    error = y.unsqueeze(-2) - mu
    squared = error ** 2
    log_normal = -(0.5 * (torch.log(2 * math.pi * var) + squared / var).sum(dim=-1))  # (M, n, K)
    joint = log_pi + log_normal
    total = torch.logsumexp(joint, dim=-1)  # (M, n)
    loss = (-total).mean(dim=-1)
    grad_total = -(_share(loss, total.shape[-1]).expand_as(total))
    grad_joint = grad_total.unsqueeze(-1) * (joint - total.unsqueeze(-1)).exp()  # logsumexp's backward
    grad_term = (-grad_joint * 0.5).unsqueeze(-1).expand_as(var)
    grad_mu, grad_var = _gaussian_nll_gradients(grad_term, error, squared, var)
    grad_logits = torch.ops.aten._log_softmax_backward_data(grad_joint, log_pi, -1, logits.dtype)
    grad_pre = torch.ops.aten.softplus_backward(grad_var.reshape(pre_variances.shape), pre_variances, 1.0, 20.0)
    return loss, torch.cat([grad_logits, grad_mu.reshape(means.shape), grad_pre], dim=-1)
