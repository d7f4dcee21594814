"""K networks of one shape trained as one: parameters stacked on a leading member axis.

A random search draws many configurations that differ only in scalars (step rate, decay,
momentum, seed). Networks that share every tensor shape can then run as one: member k's weight
matrices are slices W[k] of one (K, out, in) tensor, a layer is one batched matmul
(`torch.baddbmm`) over the member axis, and the optimiser's rule, being elementwise, runs on
(K, P) state with each member's hyperparameters as a (K, 1) column. Nothing couples the members:
the summed loss gives each member the gradient of its own loss, and every number is computed by
the same operations as in a solo run (`trainables.nn.feedforward.MLP`, `trainables.nn.optim.RmsProp`),
so a member's run equals its solo run up to the float rounding of the batched kernels.

Batched matmuls rather than `torch.func.vmap(grad(...))` over `functional_call`: for networks this
small the cost is the number of kernel calls, and vmap adds its own dispatch per call (forward and
backward of 16 members of 2 x 25 sigmoid units on 10 points, one thread: 0.34 ms by `baddbmm`,
1.13 ms by vmap).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.nn.feedforward import MLP


class StackedMLP(nn.Module):
    """K MLPs f_1..f_K of one shape (`trainables.nn.feedforward.MLP`): member k computes
    f_k(x) = W_{k,L+1} h_L + b_{k,L+1}, h_l = g(W_{k,l} h_{l-1} + b_{k,l}), all k in one call.

    Built from K constructed MLPs, so that each member keeps the initialisation its solo run
    draws. `params` are in the order of `MLP.named_parameters()` (`names`), each (K, *shape).
    """

    def __init__(self, members: list[MLP]):
        super().__init__()
        if not members:
            raise ValueError("a cohort needs at least one member")
        shapes = [[tuple(p.shape) for p in m.parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"members must share every parameter shape, but got {shapes}")
        self.names = [name for name, _ in members[0].named_parameters()]
        self.params = nn.ParameterList(
            nn.Parameter(torch.stack([p.detach() for p in ps])) for ps in zip(*(m.parameters() for m in members)))
        self.transfer = next(layer for layer in members[0].net if not isinstance(layer, nn.Linear))

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def forward(self, x: torch.Tensor, params: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(K, n, in) or a shared (n, in) -> (K, n, out); `params` replaces the parameters (same layout)."""
        params = list(self.params) if params is None else params
        h = x if x.dim() == 3 else x.expand(params[0].shape[0], *x.shape)
        n_layers = len(params) // 2
        for i in range(n_layers):
            weight, bias = params[2 * i], params[2 * i + 1]  # (K, out, in), (K, out)
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # (K, n, out)
            if i < n_layers - 1:
                h = self.transfer(h)
        return h

    def member_state(self, k: int, params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member k of `params` as the state dict of its solo `MLP`."""
        return {name: p[k].detach().clone() for name, p in zip(self.names, params)}


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)  # (K, 1)


class StackedRmsProp:
    """climin's rmsprop with Nesterov momentum (`trainables.nn.optim.RmsProp`: the same rule, term
    by term) for K members whose parameters carry a leading member axis.

    `step_rate` α_k, `decay` γ_k, `momentum` β_k per member. The parameters rest at the look-ahead
    point φ_t; `evaluation_point()` gives climin's θ_t = φ_t + β s_{t-1} as new tensors. `freeze(k)`
    stops member k: its gradient is replaced by zeros and its step by zero from then on, so its
    parameters no longer change (whatever non-finite values they hold), and the others go on.
    """

    def __init__(self, params: list[torch.Tensor], step_rate: list[float], decay: list[float],
                 momentum: list[float], offset: float = 1e-8):
        self.params = list(params)
        k = self.params[0].shape[0]
        if not len(step_rate) == len(decay) == len(momentum) == k:
            raise ValueError(f"one step_rate, decay and momentum per member must be given for {k} members, "
                             f"but got {len(step_rate)}, {len(decay)}, {len(momentum)}")
        like = self.params[0]
        self.alpha = _column(step_rate, like)
        self.gamma = _column(decay, like)
        self.one_minus_gamma = _column([1 - d for d in decay], like)  # rounded from float64, as RmsProp's `value=`
        self.beta = _column(momentum, like)
        self.offset = offset
        self.numels = [p[0].numel() for p in self.params]
        size = sum(self.numels)
        self.last_step = torch.zeros(k, size, dtype=like.dtype, device=like.device)  # s_{t-1}, (K, P)
        self.moving_mean_squared = torch.ones_like(self.last_step)  # r_0 = 1, as climin
        self.active = torch.ones(k, 1, dtype=torch.bool, device=like.device)
        self.all_active = True
        self._step2 = torch.empty_like(self.last_step)
        self._scratch = torch.empty_like(self.last_step)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [v.view_as(p) for v, p in zip(flat.split(self.numels, dim=1), self.params)]

    @torch.no_grad()
    def step(self) -> None:
        k = self.last_step.shape[0]
        grad = torch.cat([p.grad.reshape(k, -1) for p in self.params], dim=1)  # (K, P)
        if not self.all_active:
            grad = torch.where(self.active, grad, 0.0)
        r = self.moving_mean_squared
        # r_t = γ r + (1 − γ) g², with RmsProp's rounding: addcmul computes r + ((1 − γ) g) g
        r.mul_(self.gamma).addcmul_(torch.mul(grad, self.one_minus_gamma, out=self._scratch), grad)
        torch.mul(grad, self.alpha, out=self._step2).div_(r.add(self.offset).sqrt_())  # Δ = α g / sqrt(r + ε)
        self.last_step.mul_(self.beta).add_(self._step2)  # s_t = β s_{t-1} + Δ
        momentum_step = torch.mul(self.last_step, self.beta, out=self._scratch)
        torch._foreach_sub_(self.params, self._views(self._step2))
        torch._foreach_sub_(self.params, self._views(momentum_step))  # φ_{t+1} = φ_t − Δ − β s_t

    @torch.no_grad()
    def evaluation_point(self) -> list[torch.Tensor]:
        """climin's resting point θ_t = φ_t + β s_{t-1} of every member, as new tensors."""
        return torch._foreach_add([p.detach() for p in self.params], self._views(self.last_step * self.beta))

    @torch.no_grad()
    def freeze(self, members: list[int]) -> None:
        """Stop updating `members` (indices on the member axis) for good."""
        if not members:
            return
        index = torch.tensor(members, device=self.active.device)
        self.active[index] = False
        self.all_active = False
        self.alpha[index] = 0.0
        self.beta[index] = 0.0
        self.last_step[index] = 0.0  # s may hold non-finite values; β s must be exactly zero from now on
        self.moving_mean_squared[index] = 1.0
