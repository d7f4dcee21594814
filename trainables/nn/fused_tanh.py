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
(`recurrent.FDTanhRecurrence`, `stacked_loops.recur`) in the same order, which the tests run
the fused loops with on the CPU. The kernel computes the same in registers, and may contract a
product and a sum into one fused multiply-add, so a fused step agrees with the eager one to float32
rounding, not bit for bit (`benchmarks/fused_agreement.py`: 3e-6 relative at most). Hence only CUDA
tensors take this path (`enabled`), where nothing was bit-exact with the CPU anyway; the CPU keeps
its eager loops and their exactness tests. `SEQREP_FUSED=0` turns it off. The rates are tensors,
a 0-dim one for a solo net and an (n, 1, 1) column for n stacked members.

The loops run in `step_graphs` arenas (buffers at fixed addresses: the inputs are copied in, the
results cloned out), whose chunks of steps a GPU replays as CUDA graphs: the same kernels on the
same shapes, launched at once instead of three per step by the host (`SEQREP_GRAPHS=0`: launched
one by one). The CPU tests run the same arenas and segments, each segment called as it is.
Stacked members of different lengths all run every step, so that a chunk is one graph whoever has
ended (the eager loop runs the first counts[t] members at step t): past its end a member runs on
zero inputs, and its gradients there are zero, so that its last step starts from zero products as
in the eager loop; each member's products are its own rows of the batched products.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from trainables.nn import step_graphs as sg
from trainables.nn import variance as vp
from trainables.nn.sequences import to_device

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


FORWARD_IN = ("in_mean", "in_var")
FORWARD_OUT = ("a_means", "a_vars", "means", "variances", "var_ins")  # var_ins: one step more (the next input)
BACKWARD_IN = ("grad_means", "grad_vars", "a_means", "a_vars", "means")
BACKWARD_OUT = ("grad_a_means", "grad_a_vars")
SMALL = ("product_mean", "product_var", "w", "w_sq")  # a step's (B, H) products, W_rec and W_rec^2 (transposed
# in the forward); and the rates "keep", "noise" (the backward's noise2)


def _shapes(per_step: tuple[str, ...], members: tuple[int, ...], batch: int, hidden: int):
    """The arena buffers' shapes for `per_step` names, (*members, room, B, H), var_ins with room + 1."""
    def shapes(room: int) -> dict[str, tuple[int, ...]]:
        out = {name: (*members, room + (name == "var_ins"), batch, hidden) for name in per_step}
        out |= {name: (*members, batch, hidden) for name in SMALL[:2]}
        out |= {name: (*members, hidden, hidden) for name in SMALL[2:]}
        return out | {name: (*members, 1, 1) if members else () for name in ("keep", "noise")}
    return shapes


def _load(arena: sg.Arena, w: Tensor, keep, noise) -> None:
    """W_rec (as the loop reads it) and its square, the rates (a float filled in, as `rate` would
    make it, or a column copied), and zero products (those of the loop's first step)."""
    a = arena.t
    a["w"].copy_(w)
    torch.square(a["w"], out=a["w_sq"])
    for name, value in (("keep", keep), ("noise", noise)):
        a[name].fill_(value) if isinstance(value, float) else a[name].copy_(value)
    for name in ("product_mean", "product_var"):
        a[name].zero_()


def _forward(arena: sg.Arena, steps: int, product, w_t: Tensor, w_sq_t: Tensor) -> None:
    """The forward loop on the arena's buffers; `product` is torch.mm (solo) or torch.bmm (stacked)."""
    step = kernels()[0]
    in_means, in_vars, a_means, a_vars, means, variances, var_ins = (arena.steps(n) for n in FORWARD_IN + FORWARD_OUT)
    product_mean, product_var, keep, noise = (arena.t[n] for n in ("product_mean", "product_var", "keep", "noise"))

    def body(lo: int, hi: int) -> None:
        for t in range(lo, hi):
            if t:
                arena.products(product, (means[t - 1], w_t, product_mean), (var_ins[t], w_sq_t, product_var))
            step(in_means[t], product_mean, in_vars[t], product_var, keep, noise, a_means[t], a_vars[t], means[t],
                 variances[t], var_ins[t + 1])

    arena.run(steps, False, body)


def _backward(arena: sg.Arena, steps: int, product) -> None:
    """The backward loop on the arena's buffers (`_forward`'s `product`)."""
    step = kernels()[1]
    views = (arena.steps(n) for n in BACKWARD_IN + BACKWARD_OUT)
    grad_means, grad_vars, a_means, a_vars, means, grad_a_means, grad_a_vars = views
    product_mean, product_var, w, w_sq, keep, noise2 = (arena.t[n] for n in (*SMALL, "keep", "noise"))

    def body(lo: int, hi: int) -> None:
        for t in range(hi - 1, lo - 1, -1):
            if t + 1 < steps:
                arena.products(product, (grad_a_means[t + 1], w, product_mean), (grad_a_vars[t + 1], w_sq, product_var))
            step(grad_means[t], grad_vars[t], product_mean, product_var, means[t], a_means[t], a_vars[t], keep,
                 noise2, grad_a_means[t], grad_a_vars[t])

    arena.run(steps, True, body)


def solo_forward(in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: float) -> tuple[Tensor, ...]:
    """`FDTanhRecurrence.forward`'s loop, fused: (a_means, a_vars, means, variances, var_ins), (T, B, H) each."""
    steps, batch, hidden = in_mean.shape
    arena = sg.arena(("solo-forward", batch, hidden), steps, in_mean, _shapes(FORWARD_IN + FORWARD_OUT, (), batch,
                                                                               hidden), 0)
    for name, x in zip(FORWARD_IN, (in_mean, in_var)):
        arena.t[name][:steps].copy_(x)
    _load(arena, w_rec, keep, keep * (1.0 - keep))
    arena.t["var_ins"][0].zero_()  # h_0 = 0
    _forward(arena, steps, torch.mm, arena.t["w"].T, arena.t["w_sq"].T)
    return tuple(arena.t[name][:steps].clone() for name in FORWARD_OUT)


def solo_backward(grad_means: Tensor, grad_variances: Tensor, a_means: Tensor, a_vars: Tensor, means: Tensor,
                  w_rec: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """`FDTanhRecurrence.backward`'s loop, fused: the gradients of a_mean and a_var, (T, B, H) each."""
    steps, batch, hidden = a_means.shape
    arena = sg.arena(("solo-backward", batch, hidden), steps, a_means, _shapes(BACKWARD_IN + BACKWARD_OUT, (), batch,
                                                                                hidden), 0)
    for name, x in zip(BACKWARD_IN, (grad_means, grad_variances, a_means, a_vars, means)):
        arena.t[name][:steps].copy_(x)
    _load(arena, w_rec, keep, 2.0 * keep * (1.0 - keep))
    _backward(arena, steps, torch.mm)
    return tuple(arena.t[name][:steps].clone() for name in BACKWARD_OUT)


def stacked_forward(in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: Tensor, noise: Tensor, lengths: list[int],
                    save: bool, alloc) -> tuple[Tensor, ...]:
    """`stacked_loops.recur`'s FD loop, fused: in_mean, in_var (K, T, B, H), w_rec (K, H, H), keep and
    noise = keep (1 - keep) (K, 1, 1); the member at packed position k has lengths[k] steps.
    Returns (means, variances), with `save` also (a_means, a_vars, var_ins); `alloc(name, like)`
    gives the buffers. Every step runs all K members (module docstring: members past their end run
    on zeros)."""
    size, steps, batch, hidden = in_mean.shape
    arena = sg.arena(("stacked-forward", size, batch, hidden), steps, in_mean,
                     _shapes(FORWARD_IN + FORWARD_OUT, (size,), batch, hidden), 1)
    _copy_in(arena, FORWARD_IN, (in_mean, in_var), lengths)
    _load(arena, w_rec.transpose(1, 2), keep, noise)  # W_rec^T and its square, contiguous (as `recur`)
    arena.t["var_ins"][:, 0].zero_()  # h_0 = 0
    _forward(arena, steps, torch.bmm, arena.t["w"], arena.t["w_sq"])
    names = FORWARD_OUT[2:4] + (FORWARD_OUT[:2] + FORWARD_OUT[4:] if save else ())
    return tuple(alloc(name, in_mean).copy_(arena.t[name][:, :steps]) for name in names)


def _copy_in(arena: sg.Arena, names: tuple[str, ...], values: tuple[Tensor, ...], lengths: list[int]) -> None:
    """The packed (K, T, B, H) inputs into the arena, zero past each member's end (steps `recur`
    leaves unset: the members run there, and must run on finite numbers whose gradients are 0):
    one copy, or one select where members end early (not a fill per member)."""
    steps = max(lengths)
    running = None if min(lengths) == steps else _running(tuple(lengths), arena.t[names[0]].device)
    for name, value in zip(names, values):
        out = arena.t[name][:, :steps]
        out.copy_(value) if running is None else torch.where(running, value, _zero(out.dtype, out.device), out=out)


@functools.lru_cache(maxsize=8)
def _zero(dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.zeros((), dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _running(lengths: tuple[int, ...], device: torch.device) -> Tensor:
    """(K, T, 1, 1): whether packed member k runs step t (made once for a forward and its backward)."""
    steps = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return to_device(steps[:, :, None, None], device)


def stacked_backward(grad_means: Tensor, grad_vars: Tensor, a_means: Tensor, a_vars: Tensor, means: Tensor,
                     w_rec: Tensor, keep: Tensor, noise2: Tensor, lengths: list[int], alloc) -> tuple[Tensor, Tensor]:
    """`stacked_loops.recur_backward`'s FD loop, fused: the gradients of a_mean and a_var,
    (K, T, B, H) each. Every step runs all members: past a member's end its gradients are zero
    (zero gradients in, finite saved values), so that it starts its last step with zero products."""
    size, steps, batch, hidden = means.shape
    arena = sg.arena(("stacked-backward", size, batch, hidden), steps, means,
                     _shapes(BACKWARD_IN + BACKWARD_OUT, (size,), batch, hidden), 1)
    _copy_in(arena, BACKWARD_IN[:2], (grad_means, grad_vars), lengths)
    for name, x in zip(BACKWARD_IN[2:], (a_means, a_vars, means)):
        arena.t[name][:, :steps].copy_(x)
    _load(arena, w_rec, keep, noise2)
    _backward(arena, steps, torch.bmm)
    like = arena.t["means"][:, :steps]
    return tuple(alloc(name, like).copy_(arena.t[name][:, :steps]) for name in BACKWARD_OUT)
