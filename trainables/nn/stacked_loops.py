"""The tanh recurrence of K packed members (`stacked_recurrent`), forward and backward, as loops over time.

Members are packed (K, T, B, H) by decreasing length (the fused loops: in any order, each member
running for its own length); step t runs the first counts[t] (those still
running). FD: the mean and variance recurrence of `recurrent.FDTanhRecurrence` with per-member keep
probabilities as (K, 1, 1) columns; plain: h_t = tanh(in_t + h_{t-1} W^T). On a GPU the FD loops are
`fused_tanh`'s. The buffers come from an `Alloc` (`stacked_plan.Workspace.take`, or `fresh`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from trainables.nn import fused_tanh
from trainables.nn import variance as vp

if TYPE_CHECKING:
    from trainables.nn.stacked_plan import Plan


def fresh(name: str, like: Tensor) -> Tensor:
    """A new uninitialised tensor of `like`'s shape (the default `Alloc`)."""
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)


Alloc = Callable[[str, Tensor], Tensor]


def recur(in_mean: Tensor, in_var: Tensor | None, w_rec: Tensor, plan_keep: tuple[Tensor, Tensor], counts: list[int],
          save: bool = False, alloc: Alloc | None = None, lengths: list[int] | None = None) -> tuple[Tensor, ...]:
    """The tanh recurrence of packed members: in_mean, in_var (K, T, B, H), w_rec (K, H, H), `plan_keep`
    the (K, 1, 1) keep and keep (1 - keep) columns; step t runs the first counts[t] members (the
    fused loops: every member, each for its `lengths` steps; by default all T).

    FD (in_var given): `FDTanhRecurrence.forward`'s operations; returns (means, variances), and with
    `save` also a_means, a_vars, var_ins. Plain (in_var None): h_t = tanh(in_t + h_{t-1} W^T);
    returns (means,). Steps past a member's end are left unset. `alloc(name, like)`: the buffers
    (default: fresh)."""
    alloc = alloc or fresh
    if in_var is not None and fused_tanh.enabled(in_mean):  # a GPU: one fused kernel per step (`fused_tanh`)
        lengths = lengths if lengths is not None else [in_mean.shape[1]] * in_mean.shape[0]
        return fused_tanh.stacked_forward(in_mean, in_var, w_rec, *plan_keep, lengths, save, alloc)
    size, steps, batch, hidden = in_mean.shape
    w_t = w_rec.transpose(1, 2).contiguous()  # bmm reads a transposed view a third slower, the same bits
    means = alloc("means", in_mean)  # written where read: steps past a member's end never are
    h_mean = in_mean.new_zeros(size, batch, hidden)
    if in_var is None:
        for t in range(steps):
            n = counts[t]
            torch.add(in_mean[:n, t], torch.bmm(h_mean[:n], w_t[:n]), out=means[:n, t]).tanh_()
            h_mean = means[:, t]
        return (means,)
    keep, keep_var = plan_keep
    w_sq_t = w_rec.square().transpose(1, 2).contiguous()
    variances = alloc("variances", in_var)
    a_means, a_vars, var_ins = (alloc(name, in_mean) for name in ("a_means", "a_vars", "var_ins")) if save else (
        None, None, None)
    h_var = torch.zeros_like(h_mean)
    for t in range(steps):
        n = counts[t]
        # the operations of `FDTanhRecurrence.forward`, products scaled in place
        a_mean = torch.add(in_mean[:n, t], torch.bmm(h_mean[:n], w_t[:n]).mul_(keep[:n]),
                           out=a_means[:n, t] if save else None)
        var_in = torch.add(torch.mul(h_var[:n], keep[:n]), h_mean[:n].square().mul_(keep_var[:n]),
                           out=var_ins[:n, t] if save else None)
        a_var = torch.add(in_var[:n, t], torch.bmm(var_in, w_sq_t[:n]), out=a_vars[:n, t] if save else None)
        vp.tanh_into(a_mean, a_var, means[:n, t], variances[:n, t])  # `vp.tanh`'s numbers, written in place
        h_mean, h_var = means[:, t], variances[:, t]
    return (means, variances, a_means, a_vars, var_ins) if save else (means, variances)


def _start(buffers: tuple[Tensor, ...], grads: tuple[Tensor, ...], t: int, counts: list[int]) -> int:
    """Members whose last step is t take their outputs' gradients there; returns counts[t]."""
    n, done = counts[t], counts[t + 1] if t + 1 < len(counts) else 0
    if n > done:
        for buffer, grad in zip(buffers, grads):
            buffer[done:n] = grad[done:n, t]
    return n


def recur_backward(grad_means: Tensor, grad_vars: Tensor | None, saved: tuple[Tensor, ...], w_rec: Tensor,
                   plan: Plan, alloc: Alloc | None = None) -> tuple[Tensor, Tensor | None]:
    """BPTT of `recur` in the packed layout: the gradients of a_t (FD: of its mean and variance)."""
    alloc = alloc or fresh
    means = saved[0]
    grad_a_means = alloc("grad_a_means", means)
    g_mean = means.new_zeros(means.shape[0], *means.shape[2:])
    if not plan.fd:
        for t in range(means.shape[1] - 1, -1, -1):
            n = _start((g_mean,), (grad_means,), t, plan.counts)
            grad_a = torch.mul(g_mean[:n], 1.0 - means[:n, t].square(), out=grad_a_means[:n, t])
            if t:
                g_mean[:n] = grad_means[:n, t - 1] + torch.bmm(grad_a, w_rec[:n])
        return grad_a_means, None
    _, a_means, a_vars, _ = saved[1:]
    if fused_tanh.enabled(means):
        return fused_tanh.stacked_backward(grad_means, grad_vars, a_means, a_vars, means, w_rec, plan.keep,
                                           plan.keep_var2, plan.packed_lengths, alloc)
    keep, keep_var2, w_sq = plan.keep, plan.keep_var2, w_rec.square()
    grad_a_vars = alloc("grad_a_vars", means)
    g_var = torch.zeros_like(g_mean)
    for t in range(means.shape[1] - 1, -1, -1):
        n = _start((g_mean, g_var), (grad_means, grad_vars), t, plan.counts)
        grad_a_mean, grad_a_var = vp.tanh_backward_into(a_means[:n, t], a_vars[:n, t], means[:n, t], g_mean[:n],
                                                        g_var[:n], grad_a_means[:n, t], grad_a_vars[:n, t])
        if t:
            # g_mean = grad_means[t-1] + keep (grad_a_mean W) + keep_var2 grad_var_in E[h_{t-1}] and
            # g_var = grad_vars[t-1] + keep grad_var_in, summed in that order, in place
            grad_var_in = torch.bmm(grad_a_var, w_sq[:n])
            torch.add(grad_means[:n, t - 1], torch.bmm(grad_a_mean, w_rec[:n]).mul_(keep[:n]), out=g_mean[:n])
            g_mean[:n].add_(torch.mul(grad_var_in, keep_var2[:n]).mul_(means[:n, t - 1]))
            torch.add(grad_vars[:n, t - 1], grad_var_in.mul_(keep[:n]), out=g_var[:n])
    return grad_a_means, grad_a_vars
