"""climin's rmsprop with Nesterov momentum (`trainables.nn.optim.RmsProp`) for K stacked members at once.

Parameters carry a leading member axis (K, *shape); gradient and state are (K, P) flat vectors and
each member's step rate, decay and momentum a (K, 1) column, so one step is the solo optimiser's
handful of elementwise operations on all members (`RmsProp`'s update rule and rounding: r_0 = 1,
r = γ r + ((1 − γ) g) g, Δ = α g / sqrt(r + 1e-8), s = β s + Δ, φ = φ − Δ − β s). The parameters
rest at the look-ahead point φ_t; inside `evaluation_point()` they are climin's θ_t = φ_t + β s_{t-1}
and afterwards bit for bit what they were (`RmsProp.climin_point`). `freeze(members)` stops
members for good: zero gradient, zero step. `member_state(k)` / `load_member_state(k, state)`:
member k's part in the layout of the solo optimiser's `state_dict()`, so a member's checkpoint
reads like its solo run's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

STATE_NAMES = ("last_step", "moving_mean_squared")


class StackedRmsProp:
    """One value per member of `step_rate` α, `decay` γ and `momentum` β; `offset` is climin's 1e-8."""

    def __init__(self, params: list[Tensor], step_rate: list[float], decay: list[float], momentum: list[float],
                 offset: float = 1e-8):
        self.params = list(params)
        like = self.params[0]
        size = like.shape[0]
        if not len(step_rate) == len(decay) == len(momentum) == size:
            raise ValueError(f"one step_rate, decay and momentum per member must be given for {size} members, "
                             f"but got {len(step_rate)}, {len(decay)}, {len(momentum)}")
        self.hyper = {"step_rate": list(step_rate), "decay": list(decay), "momentum": list(momentum)}
        self.offset = offset
        self.numels = [p[0].numel() for p in self.params]
        self.state = {name: torch.zeros(size, sum(self.numels), dtype=like.dtype, device=like.device)
                      for name in STATE_NAMES}
        self.state["moving_mean_squared"].fill_(1.0)  # r_0 = 1, as climin
        self.active = torch.ones(size, 1, dtype=torch.bool, device=like.device)
        self.all_active = True
        self.stepped = False  # the solo optimiser has no state before its first step
        self._columns()

    def _columns(self) -> None:
        like = self.params[0]

        def column(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)  # (K, 1)

        self.alpha, self.gamma = column(self.hyper["step_rate"]), column(self.hyper["decay"])
        self.one_minus_gamma = column([1 - d for d in self.hyper["decay"]])  # rounded from float64, as `value=`
        self.beta = column(self.hyper["momentum"])
        frozen = ~self.active
        self.alpha[frozen], self.beta[frozen] = 0.0, 0.0

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [v.view_as(p) for v, p in zip(flat.split(self.numels, dim=1), self.params)]

    @torch.no_grad()
    def step(self) -> None:
        size = self.params[0].shape[0]
        grad = torch.cat([p.grad.reshape(size, -1) for p in self.params], dim=1)  # (K, P)
        if not self.all_active:
            grad = torch.where(self.active, grad, 0.0)
        r, last = self.state["moving_mean_squared"], self.state["last_step"]
        r.mul_(self.gamma).addcmul_(grad * self.one_minus_gamma, grad)  # r_t = γ r + ((1 − γ) g) g
        step2 = torch.mul(grad, self.alpha).div_(r.add(self.offset).sqrt_())  # Δ = α g / sqrt(r + ε)
        last.mul_(self.beta).add_(step2)  # s_t = β s_{t-1} + Δ
        torch._foreach_sub_(self.params, self._views(step2))
        torch._foreach_sub_(self.params, self._views(last * self.beta))  # φ_{t+1} = φ_t − Δ − β s_t
        self.stepped = True

    @contextlib.contextmanager
    def evaluation_point(self) -> Iterator[None]:
        """Within the block the parameters are climin's θ_t = φ_t + β s_{t-1}; restored on exit."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            torch._foreach_add_(self.params, self._views(self.state["last_step"] * self.beta))
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, saved)

    @torch.no_grad()
    def freeze(self, members: list[int]) -> None:
        """Stop updating `members` (indices on the member axis) for good."""
        if not members:
            return
        index = torch.tensor(members, device=self.active.device)
        self.active[index] = False
        self.all_active = False
        self.state["last_step"][index] = 0.0  # s may hold non-finite values; β s must be exactly zero from now on
        self.state["moving_mean_squared"][index] = 1.0
        self._columns()

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's optimiser state as `RmsProp.state_dict()` of its solo run holds it."""
        views = {name: self._views(value) for name, value in self.state.items()}
        state = ({i: {name: views[name][i][k].clone() for name in STATE_NAMES} for i in range(len(self.params))}
                 if self.stepped else {})
        group = {name: self.hyper[name][k] for name in ("step_rate", "decay", "momentum")}
        return {"state": state, "param_groups": [{**group, "offset": self.offset,
                                                  "params": list(range(len(self.params)))}]}

    @torch.no_grad()
    def load_member_state(self, k: int, state: Mapping[str, Any]) -> None:
        """Load member k's part from a solo-layout `state_dict()` (its hyperparameters included, as
        `torch.optim.Optimizer.load_state_dict` restores them)."""
        group = state["param_groups"][0]
        for name in ("step_rate", "decay", "momentum"):
            self.hyper[name][k] = float(group[name])
        self._columns()
        entries = state["state"]
        if not entries:
            return
        views = {name: self._views(value) for name, value in self.state.items()}
        for i in range(len(self.params)):
            for name in STATE_NAMES:
                views[name][i][k].copy_(entries[i][name])
        self.stepped = True
