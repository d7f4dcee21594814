"""K networks of one shape trained as one: parameters stacked on a leading member axis.

A random search draws many configurations that differ only in scalars (step rate, decay,
momentum, seed) and in choices that fix no shape (the transfer function). Networks that share
every tensor shape can then run as one: member k's weight matrices are slices W[k] of one
(K, out, in) tensor, a layer is one batched matmul (`torch.baddbmm`) over the member axis, the
transfer function is chosen per member (`torch.where` between the sigmoid and the rectifier of
the same pre-activations, both computed by the kernels a solo run uses), and the optimiser's rule,
being elementwise, runs on one flat vector of all members' parameters with each member's
hyperparameters repeated over its entries. Nothing couples the members, and every number is
computed by the same operations as in a solo run (`trainables.nn.feedforward.MLP`,
`trainables.nn.optim.RmsProp`, `torch.nn.utils.clip_grad_norm_`), so a member's run equals its
solo run up to the float rounding of the batched kernels (a batched matmul sums its products in
another order than `addmm`).

Layout: all parameters live in one flat tensor `storage`, parameter by parameter, each block
(K, *shape) contiguous (`views`), so that the optimiser updates everything with a handful of
whole-vector operations and the backward pass writes each gradient straight into its block of a
flat gradient (`out=`). A member's parameters as one row of P numbers (`rows`, `load_member`,
`unflatten`) are what its checkpoint holds.

The backward pass is written out (`forward_train`, `backward`) rather than left to autograd: for
networks this small the cost is the number of operations, and autograd's bookkeeping per node (the
views, transposes and broadcasts around each batched matmul) costs as much as the arithmetic. Its
terms are those autograd computes for the same forward pass (dW = gᵀ h, db = Σ_n g, g ← g W, and
the transfer's `sigmoid_backward` / `threshold_backward` at its output); `forward` with parameters
that require gradients lets autograd compute them instead (tests/test_cohort.py compares the two).
Batched matmuls rather than `torch.func.vmap(grad(...))`: vmap adds its own dispatch per call
(forward and backward of 16 members of 2 x 25 sigmoid units on 10 points, one thread: 0.34 ms by
`baddbmm` and autograd, 1.13 ms by vmap).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainables.nn import padding
from trainables.nn.feedforward import MLP

Members = slice | Sequence[int]


def _transfer_name(member: MLP) -> str:
    layer = next((layer for layer in member.net if not isinstance(layer, nn.Linear)), None)
    return "sigmoid" if isinstance(layer, nn.Sigmoid) else "rectifier"


class StackedMLP:
    """K MLPs f_1..f_K of one shape (`trainables.nn.feedforward.MLP`): member k computes
    f_k(x) = W_{k,L+1} h_L + b_{k,L+1}, h_l = g_k(W_{k,l} h_{l-1} + b_{k,l}), all k in one call.

    Built from K constructed MLPs, so that each member keeps the initialisation its solo run
    draws and its own transfer function g_k. `params` are in the order of `MLP.parameters()`,
    each (K, *shape), views of `storage`. `depths`: for members padded to this shape
    (`trainables.nn.padding`), each member's own number of hidden layers; its layers beyond it
    pass their input through (default: every member has every layer).
    """

    def __init__(self, members: list[MLP], device: torch.device | str | None = None,
                 depths: Sequence[int] | None = None):
        if not members:
            raise ValueError("a cohort needs at least one member")
        shapes = [[tuple(p.shape) for p in m.parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"members must share every parameter shape, but got {shapes}")
        self.size = len(members)
        self.shapes = [torch.Size(s) for s in shapes[0]]
        self.numels = [s.numel() for s in self.shapes]
        self.storage = torch.cat([torch.stack([p.detach() for p in ps]).reshape(-1)
                                  for ps in zip(*(m.parameters() for m in members))])
        if device is not None:
            self.storage = self.storage.to(device)
        self.params = self.views(self.storage)
        self.transfers = [_transfer_name(m) for m in members]
        # (K, 1, 1): True where member k's transfer is the sigmoid; None when all members share one
        mixed = len(set(self.transfers)) > 1
        self.sigmoid = (torch.tensor([t == "sigmoid" for t in self.transfers], device=self.storage.device)
                        .view(-1, 1, 1) if mixed else None)
        hidden = len(self.shapes) // 2 - 1
        self.passing = padding.passing(depths or [hidden] * self.size, hidden, self.storage.device)

    def _pass(self, layer: int, h: torch.Tensor, out: torch.Tensor, members: Members | None) -> torch.Tensor:
        """Hidden layer `layer`'s output: `out`, or its input h for the members it passes through."""
        mask = self.passing[layer]
        if mask is None:
            return out
        return torch.where(mask if members is None else mask[members], h, out)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A flat tensor laid out as `storage` as one (K, *shape) view per parameter."""
        blocks = flat.split([self.size * n for n in self.numels])
        return [block.view(self.size, *shape) for block, shape in zip(blocks, self.shapes)]

    def _transfer(self, h: torch.Tensor, members: Members | None) -> torch.Tensor:
        if self.sigmoid is None:
            return torch.sigmoid(h) if self.transfers[0] == "sigmoid" else torch.relu(h)
        mask = self.sigmoid if members is None else self.sigmoid[members]
        return torch.where(mask, torch.sigmoid(h), torch.relu(h))

    def _transfer_backward(self, grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Autograd's backward of `_transfer` (all members) at its output h."""
        if self.sigmoid is None:
            if self.transfers[0] == "sigmoid":
                return torch.ops.aten.sigmoid_backward(grad, h)
            return torch.ops.aten.threshold_backward(grad, h, 0)
        return torch.where(self.sigmoid, torch.ops.aten.sigmoid_backward(grad, h),
                           torch.ops.aten.threshold_backward(grad, h, 0))

    def __call__(self, x: torch.Tensor, params: Sequence[torch.Tensor] | None = None,
                 members: Members | None = None) -> torch.Tensor:
        return self.forward(x, params, members)

    def forward(self, x: torch.Tensor, params: Sequence[torch.Tensor] | None = None,
                members: Members | None = None) -> torch.Tensor:
        """(M, n, in) or a shared (n, in) -> (M, n, out). `params` replaces the parameters (same
        layout); `members` (a slice or indices) names the members `params` hold when they are not
        all K of them, so that each gets its own transfer function."""
        params = self.params if params is None else params
        h = x if x.dim() == 3 else x.expand(params[0].shape[0], *x.shape)
        n_layers = len(params) // 2
        for i in range(n_layers):
            weight, bias = params[2 * i], params[2 * i + 1]  # (M, out, in), (M, out)
            out = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # (M, n, out)
            h = self._pass(i, h, self._transfer(out, members), members) if i < n_layers - 1 else out
        return h

    @torch.no_grad()
    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """All K members on their own inputs x (K, n, in): the output (K, n, out), and what
        `backward` needs (each layer's input, and each hidden layer's transfer output)."""
        inputs, outs, h = [], [], x
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            inputs.append(h)
            h = torch.baddbmm(self.params[2 * i + 1].unsqueeze(1), h, self.params[2 * i].transpose(1, 2))
            if i < n_layers - 1:
                outs.append(self._transfer(h, None))
                h = self._pass(i, inputs[-1], outs[-1], None)
        return h, (inputs, outs)

    @torch.no_grad()
    def backward(self, state: tuple[list[torch.Tensor], list[torch.Tensor]], grad: torch.Tensor,
                 grads: Sequence[torch.Tensor]) -> None:
        """Write the gradient of the members' losses into `grads` (laid out as `params`, e.g.
        `views` of a flat gradient), given the gradient (K, n, out) at the output of
        `forward_train` and its `state`. Through a layer that passes a member's input on, the
        gradient at its output goes to its input unchanged (`torch.where`'s backward)."""
        inputs, outs = state
        carried = None  # the gradient passed-through layers hand straight to their input
        for i in reversed(range(len(inputs))):
            torch.bmm(grad.transpose(1, 2), inputs[i], out=grads[2 * i])  # dW = gᵀ h_in, (K, out, in)
            torch.sum(grad, dim=1, out=grads[2 * i + 1])  # db, (K, out)
            if i == 0:
                break
            at_input = torch.bmm(grad, self.params[2 * i])
            if carried is not None:
                at_input = at_input + carried
            mask = self.passing[i - 1]  # hidden layer i - 1 produced this layer's input
            if mask is None:
                grad, carried = self._transfer_backward(at_input, outs[i - 1]), None
            else:
                grad = self._transfer_backward(torch.where(mask, 0.0, at_input), outs[i - 1])
                carried = torch.where(mask, at_input, 0.0)

    def flat(self, params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """`params` (default the parameters) as one new (K, P) tensor: member k's parameters in
        `parameters()` order, each flattened, concatenated."""
        params = self.params if params is None else params
        return torch.cat([p.detach().reshape(p.shape[0], -1) for p in params], dim=1)

    def rows(self, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Every member's row of `flat(params)`, each a copy in a storage of its own (saving one
        member saves only its numbers)."""
        return [row.clone() for row in self.flat(params)]

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of one member's row (P,) as its solo MLP's parameters, or of (M, P) rows as
        stacked parameters (M, *shape)."""
        lead = flat.shape[:-1]
        return [v.view(*lead, *shape) for v, shape in zip(flat.split(self.numels, dim=-1), self.shapes)]

    @torch.no_grad()
    def load_member(self, k: int, row: torch.Tensor) -> None:
        """Set member k's parameters from its row (P,) of `flat`."""
        for p, value in zip(self.params, self.unflatten(row)):
            p[k].copy_(value)


class StackedRmsProp:
    """climin's rmsprop with Nesterov momentum (`trainables.nn.optim.RmsProp`: the same rule, term
    by term) for the K members of a `StackedMLP`, on its flat `storage`.

    `step_rate` α_k, `decay` γ_k, `momentum` β_k per member, each repeated over the member's
    entries of the flat vector (`member_of`). `step(grad)` takes the flat gradient (laid out as
    `storage`). The parameters rest at the look-ahead point φ_t; `evaluation_point()` gives
    climin's θ_t = φ_t + β s_{t-1} as new tensors. `freeze(members)` stops those members: their
    gradient is replaced by zeros and their step by zero from then on, so their parameters no
    longer change (whatever non-finite values they hold), and the others go on. `rows(members)` /
    `load_member(k, row)`: a member's state as one flat row, read and written.

    `real` (bool, laid out as `storage`): for members padded to the stack's shape
    (`trainables.nn.padding`), True at their own entries. The others get a zero gradient and a
    decay of 1, so that they, their step and their squared-gradient average (r = 1) never change:
    a padded weight stays exactly zero.
    """

    def __init__(self, model: StackedMLP, step_rate: list[float], decay: list[float],
                 momentum: list[float], offset: float = 1e-8, real: torch.Tensor | None = None):
        self.model, self.storage = model, model.storage
        k = model.size
        if not len(step_rate) == len(decay) == len(momentum) == k:
            raise ValueError(f"one step_rate, decay and momentum per member must be given for {k} members, "
                             f"but got {len(step_rate)}, {len(decay)}, {len(momentum)}")
        like = self.storage
        self.member_of = torch.cat([torch.arange(k, device=like.device).repeat_interleave(n) for n in model.numels])

        def spread(values: list[float]) -> torch.Tensor:  # one value per member, rounded as RmsProp's scalars
            return torch.tensor(values, dtype=like.dtype, device=like.device)[self.member_of]

        self.alpha, self.gamma, self.beta = spread(step_rate), spread(decay), spread(momentum)
        self.one_minus_gamma = spread([1 - d for d in decay])  # rounded from float64, as RmsProp's `value=`
        self.offset = offset
        self.last_step = torch.zeros_like(like)  # s_{t-1}
        self.moving_mean_squared = torch.ones_like(like)  # r_0 = 1, as climin
        self.active: torch.Tensor | None = None  # entries of unfrozen members; None: all
        if real is not None:
            padded = ~real
            self.active = real.clone()
            self.gamma[padded], self.one_minus_gamma[padded] = 1.0, 0.0
        self._step2 = torch.empty_like(like)
        self._scratch = torch.empty_like(like)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        if self.active is not None:
            grad = torch.where(self.active, grad, 0.0)
        r = self.moving_mean_squared
        # r_t = γ r + (1 − γ) g², with RmsProp's rounding: addcmul computes r + ((1 − γ) g) g
        r.mul_(self.gamma).addcmul_(torch.mul(grad, self.one_minus_gamma, out=self._scratch), grad)
        torch.mul(grad, self.alpha, out=self._step2).div_(r.add(self.offset).sqrt_())  # Δ = α g / sqrt(r + ε)
        self.last_step.mul_(self.beta).add_(self._step2)  # s_t = β s_{t-1} + Δ
        self.storage.sub_(self._step2).sub_(torch.mul(self.last_step, self.beta, out=self._scratch))  # φ − Δ − β s_t

    @torch.no_grad()
    def evaluation_point(self) -> list[torch.Tensor]:
        """climin's resting point θ_t = φ_t + β s_{t-1} of every member, as new tensors."""
        return self.model.views(self.storage + self.last_step * self.beta)

    @torch.no_grad()
    def freeze(self, members: list[int]) -> None:
        """Stop updating `members` (indices on the member axis) for good."""
        if not members:
            return
        frozen = torch.isin(self.member_of, torch.tensor(members, device=self.member_of.device))
        self.active = ~frozen if self.active is None else self.active & ~frozen
        self.alpha[frozen] = 0.0
        self.beta[frozen] = 0.0
        self.last_step[frozen] = 0.0  # s may hold non-finite values; β s must be exactly zero from now on
        self.moving_mean_squared[frozen] = 1.0

    def rows(self, members: Sequence[int]) -> list[torch.Tensor]:
        """Each of `members`' state as one row (2P,): s_{t-1}, then r_t, each parameter by
        parameter as `StackedMLP.flat`; copies, each in a storage of its own."""
        views = self.model.views(self.last_step) + self.model.views(self.moving_mean_squared)
        flat = torch.cat([v.reshape(self.model.size, -1) for v in views], dim=1)  # (K, 2P)
        return [flat[k].clone() for k in members]

    @torch.no_grad()
    def load_member(self, k: int, row: torch.Tensor) -> None:
        """Set member k's state from its row (2P,) of `rows`."""
        last_step, moving_mean_squared = row.split(sum(self.model.numels))
        for state, values in ((self.last_step, last_step), (self.moving_mean_squared, moving_mean_squared)):
            for block, value in zip(self.model.views(state), self.model.unflatten(values)):
                block[k].copy_(value)


@torch.no_grad()
def clip_member_grad_norms(grads: Sequence[torch.Tensor], max_norm: torch.Tensor, clipped: torch.Tensor) -> None:
    """`torch.nn.utils.clip_grad_norm_` per member: member k's gradients (slices [k] of every
    (K, *shape) gradient in `grads`) are scaled by min(max_norm[k] / (‖g_k‖ + 1e-6), 1) where
    `clipped[k]`, and left bit for bit alone elsewhere. `max_norm`, `clipped`: (K,)."""
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads], dim=1)  # (K, T)
    total = torch.linalg.vector_norm(norms, dim=1)  # (K,): each member's global gradient norm
    # torch computes max_norm / (norm + 1e-6) as a reciprocal times max_norm (Tensor.__rtruediv__)
    factor = torch.where(clipped, ((total + 1e-6).reciprocal() * max_norm).clamp(max=1.0), 1.0)
    for g in grads:
        g.mul_(factor.view(k, *([1] * (g.dim() - 1))))
