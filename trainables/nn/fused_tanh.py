"""The FD tanh recurrence's per-step elementwise work as one fused kernel per step on a GPU.

On a GPU the FD-RNN's time loop is bound by kernel launches, not arithmetic: `variance.tanh_into`
and `variance.tanh_backward_into` are ~20 and ~30 small operations on a (B, H) block, so that one
step of forward and backward launched ~60 kernels, and a (T=100, B=32, H=600) forward + backward
took 18x cuDNN's nn.RNN on an H200. Here each step is its two recurrent products plus one
elementwise kernel (hand-written in Triton, `fused_tanh_triton`; torch.compile fused them too, but
its per-call wrapper cost ~150 us per step on the H200, three times the kernels it saved):

- `forward_step`: a = (in_mean + keep P_mean, in_var + P_var) from the step's products
  P_mean = E[h_{t-1}] W^T and P_var = var_in_t W^2^T; the tanh moments (E[h_t], V[h_t]) of a
  (`variance.tanh`'s formulas); and var_in_{t+1} = keep V[h_t] + keep (1 - keep) E[h_t]^2, the
  next step's input to W^2. It writes a_mean, a_var, E[h_t], V[h_t] and var_in_{t+1}.
- `backward_step`: the gradient reaching h_t, g_mean = grad_mean_t + keep G_mean + 2 keep (1 - keep)
  G_var E[h_t] and g_var = grad_var_t + keep G_var from step t + 1's products G_mean = grad_a_mean W
  and G_var = grad_a_var W^2 (zero at the last step), then `variance.tanh_backward`'s chain rule;
  it writes the gradients of a_mean and a_var.

The functions below are the reference: torch operations, those of the eager loops
(`recurrent.FDTanhRecurrence`, `stacked_recurrent.recur`) in the same order, which the tests run
the fused loops with on the CPU. The kernel computes the same in registers, and may contract a
product and a sum into one fused multiply-add, so a fused step agrees with the eager one to float32
rounding, not bit for bit (`benchmarks/fused_agreement.py`: 3e-6 relative at most). Hence only CUDA
tensors take this path (`enabled`), where nothing was bit-exact with the CPU anyway; the CPU keeps
its eager loops and their exactness tests. `SEQREP_FUSED=0` turns it off. The rates are tensors,
a 0-dim one for a solo net and an (n, 1, 1) column for n stacked members.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from trainables.nn import variance as vp

Tensor = torch.Tensor


def forward_step(in_mean: Tensor, product_mean: Tensor, in_var: Tensor, product_var: Tensor, keep: Tensor,
                 noise: Tensor, a_mean: Tensor, a_var: Tensor, mean: Tensor, var: Tensor, var_in_next: Tensor) -> None:
    """One FD tanh step from its two recurrent products (module docstring), written into the last five."""
    torch.add(in_mean, product_mean * keep, out=a_mean)
    torch.add(in_var, product_var, out=a_var)
    vp.tanh_into(a_mean, a_var, mean, var)
    torch.add(var * keep, mean.square() * noise, out=var_in_next)


def backward_step(grad_mean: Tensor, grad_var: Tensor, product_mean: Tensor, product_var: Tensor, mean_y: Tensor,
                  a_mean: Tensor, a_var: Tensor, keep: Tensor, noise2: Tensor, grad_a_mean: Tensor,
                  grad_a_var: Tensor) -> None:
    """One step of BPTT (module docstring); `noise2` = 2 keep (1 - keep). Writes the last two."""
    g_mean = grad_mean + product_mean * keep + product_var * noise2 * mean_y
    g_var = grad_var + product_var * keep
    vp.tanh_backward_into(a_mean, a_var, mean_y, g_mean, g_var, grad_a_mean, grad_a_var)


def enabled(x: Tensor) -> bool:
    """Whether the recurrence over `x` takes the fused path: a CUDA tensor, Triton there, SEQREP_FUSED not 0."""
    return x.is_cuda and os.environ.get("SEQREP_FUSED", "1") != "0" and _has_triton()


@functools.cache
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def kernels() -> tuple:
    """(forward_step, backward_step) as Triton kernels (`fused_tanh_triton`)."""
    from trainables.nn import fused_tanh_triton

    return fused_tanh_triton.forward_step, fused_tanh_triton.backward_step


def rate(value: float, like: Tensor) -> Tensor:
    """A rate as a 0-dim tensor on `like`'s device (filled there: no copy from the host, which a CUDA
    graph's capture refuses)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _head(n: int, size: int):
    """A view of a tensor's first n members (itself when n is all of them: one indexing fewer per argument)."""
    return (lambda v: v) if n == size else (lambda v: v[:n])


def solo_forward(in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: float) -> tuple[Tensor, ...]:
    """`FDTanhRecurrence.forward`'s loop, fused: (a_means, a_vars, means, variances, var_ins), (T, B, H) each."""
    step = kernels()[0]
    in_mean, in_var = in_mean.contiguous(), in_var.contiguous()  # the kernels read contiguous (B, H) blocks
    buffers = [torch.empty_like(in_mean) for _ in range(5)]  # a_means, a_vars, means, variances, var_ins
    buffers[4][0].zero_()  # h_0 = 0
    product_mean, product_var = torch.zeros_like(in_mean[0]), torch.zeros_like(in_mean[0])
    w_t, w_sq_t = w_rec.T, w_rec.square().T
    keep_t, noise = rate(keep, in_mean), rate(keep * (1.0 - keep), in_mean)
    # each tensor's steps as views made once (a view per step and argument costs microseconds each)
    in_means, in_vars, a_means, a_vars, means, variances, var_ins = (x.unbind(0) for x in (in_mean, in_var, *buffers))
    var_ins = var_ins + (torch.empty_like(product_mean),)  # var_in after the last step, unused
    for t in range(len(in_means)):
        if t:
            torch.mm(means[t - 1], w_t, out=product_mean)
            torch.mm(var_ins[t], w_sq_t, out=product_var)
        step(in_means[t], product_mean, in_vars[t], product_var, keep_t, noise, a_means[t], a_vars[t], means[t],
             variances[t], var_ins[t + 1])
    return tuple(buffers)


def solo_backward(grad_means: Tensor, grad_variances: Tensor, a_means: Tensor, a_vars: Tensor, means: Tensor,
                  w_rec: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """`FDTanhRecurrence.backward`'s loop, fused: the gradients of a_mean and a_var, (T, B, H) each."""
    step = kernels()[1]
    grads = torch.empty_like(a_means), torch.empty_like(a_vars)
    product_mean, product_var = torch.zeros_like(a_means[0]), torch.zeros_like(a_means[0])
    w_sq = w_rec.square()
    keep_t, noise2 = rate(keep, a_means), rate(2.0 * keep * (1.0 - keep), a_means)
    views = (x.contiguous().unbind(0) for x in (grad_means, grad_variances, a_means, a_vars, means, *grads))
    grad_means, grad_variances, a_means, a_vars, means, grad_a_means, grad_a_vars = views
    for t in range(len(a_means) - 1, -1, -1):
        if t + 1 < len(a_means):
            torch.mm(grad_a_means[t + 1], w_rec, out=product_mean)
            torch.mm(grad_a_vars[t + 1], w_sq, out=product_var)
        step(grad_means[t], grad_variances[t], product_mean, product_var, means[t], a_means[t], a_vars[t], keep_t,
             noise2, grad_a_means[t], grad_a_vars[t])
    return grads


def stacked_forward(in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: Tensor, noise: Tensor, counts: list[int],
                    save: bool, alloc) -> tuple[Tensor, ...]:
    """`stacked_recurrent.recur`'s FD loop, fused: in_mean, in_var (K, T, B, H), w_rec (K, H, H), keep and
    noise = keep (1 - keep) (K, 1, 1); step t runs the first counts[t] members. Returns (means,
    variances), with `save` also (a_means, a_vars, var_ins); `alloc(name, like)` gives the buffers."""
    step = kernels()[0]
    size, steps, batch, hidden = in_mean.shape
    means, variances = alloc("means", in_mean), alloc("variances", in_var)
    block = in_mean.new_zeros(size, batch, hidden)
    product_mean, product_var = torch.zeros_like(block), torch.zeros_like(block)
    if save:
        kept = [alloc(name, in_mean) for name in ("a_means", "a_vars", "var_ins")]
        kept[2][:, 0].zero_()
        a_means, a_vars, var_ins = (x.unbind(1) for x in kept)
        var_ins = var_ins + (torch.empty_like(block),)  # var_in after the last step, unused
    else:  # nothing kept: a in one (K, B, H) block per step, var_in alternating between two
        a_means, a_vars = [torch.empty_like(block)] * steps, [torch.empty_like(block)] * steps
        var_ins = [block, torch.empty_like(block)] * (steps // 2 + 1)
    in_means, in_vars, mean_steps, var_steps = (x.unbind(1) for x in (in_mean, in_var, means, variances))
    w_t, w_sq_t = w_rec.transpose(1, 2).contiguous(), w_rec.square().transpose(1, 2).contiguous()  # as `recur`
    for t in range(steps):
        head = _head(counts[t], size)
        if t:
            torch.bmm(head(mean_steps[t - 1]), head(w_t), out=head(product_mean))
            torch.bmm(head(var_ins[t]), head(w_sq_t), out=head(product_var))
        step(head(in_means[t]), head(product_mean), head(in_vars[t]), head(product_var), head(keep), head(noise),
             head(a_means[t]), head(a_vars[t]), head(mean_steps[t]), head(var_steps[t]), head(var_ins[t + 1]))
    return (means, variances, *kept) if save else (means, variances)


def stacked_backward(grad_means: Tensor, grad_vars: Tensor, a_means: Tensor, a_vars: Tensor, means: Tensor,
                     w_rec: Tensor, keep: Tensor, noise2: Tensor, counts: list[int], alloc) -> tuple[Tensor, Tensor]:
    """`stacked_recurrent.recur_backward`'s FD loop, fused: the gradients of a_mean and a_var,
    (K, T, B, H) each. A member starts at its last step with zero products (their rows are never
    written before: the members running at a later step are a prefix of those running earlier)."""
    step = kernels()[1]
    grads = alloc("grad_a_means", means), alloc("grad_a_vars", means)
    size, steps = means.shape[:2]
    product_mean = means.new_zeros(size, *means.shape[2:])
    product_var = torch.zeros_like(product_mean)
    w_sq = w_rec.square()
    views = (x.unbind(1) for x in (grad_means, grad_vars, a_means, a_vars, means, *grads))
    grad_means, grad_vars, a_means, a_vars, means, grad_a_means, grad_a_vars = views
    for t in range(steps - 1, -1, -1):
        if t + 1 < steps:
            head = _head(counts[t + 1], size)
            torch.bmm(head(grad_a_means[t + 1]), head(w_rec), out=head(product_mean))
            torch.bmm(head(grad_a_vars[t + 1]), head(w_sq), out=head(product_var))
        head = _head(counts[t], size)
        step(head(grad_means[t]), head(grad_vars[t]), head(product_mean), head(product_var), head(means[t]),
             head(a_means[t]), head(a_vars[t]), head(keep), head(noise2), head(grad_a_means[t]), head(grad_a_vars[t]))
    return grads
