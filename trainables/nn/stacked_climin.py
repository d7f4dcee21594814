"""climin's rmsprop and Adadelta with Nesterov momentum (`trainables.nn.optim`) for K members at once.

The members' parameters carry a leading member axis (K, *shape); gradient and state are (K, P)
flat vectors, and each member's hyperparameters (step rate, decay, momentum, offset) and its
gradient-renormalisation threshold are (K, 1) columns. Every term of the update is the solo
optimiser's operation with the member's scalar in the column, in the same order; where the solo
optimiser hands a scalar to a fused operation (the momentum step `p - β s`, climin's resting point
`p + β s`), the update runs that operation per member with that member's scalar, so each number is
rounded as in the solo run.

The parameters rest at the look-ahead point φ_t; `evaluation_point()` gives climin's
θ_t = φ_t + β s_{t-1}. `select(positions)` keeps some members (a diverged member leaves the stack).
`member_state(pos)` / `load_member(pos, state)`: one member's state per parameter, as the solo
optimiser's `state_dict()["state"]` holds it.
"""

from __future__ import annotations

import torch
from torch import Tensor

STATE_NAMES = {"rmsprop": ("last_step", "moving_mean_squared"), "adadelta": ("last_step", "gms", "sms")}


def _column(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)  # (K, 1)


class StackedClimin:
    """`rule` "rmsprop" (offset: climin's fixed 1e-8) or "adadelta"; one value per member of
    `step_rate`, `decay`, `momentum`, `offset` and `grad_norm` (None: never renormalise)."""

    def __init__(self, params: list[Tensor], rule: str, step_rate: list[float], decay: list[float],
                 momentum: list[float], offset: list[float], grad_norm: list[float | None]):
        if rule not in STATE_NAMES:
            raise ValueError(f"rule must be one of {', '.join(STATE_NAMES)}, got {rule!r}")
        self.params, self.rule = list(params), rule
        like, size = self.params[0], self.params[0].shape[0]
        if not all(len(v) == size for v in (step_rate, decay, momentum, offset, grad_norm)):
            raise ValueError(f"one value per member ({size}) of every hyperparameter must be given")
        self.hyper = {"alpha": list(step_rate), "gamma": list(decay), "beta": list(momentum), "offset": list(offset),
                      "threshold": list(grad_norm)}
        self._columns(like)
        total = sum(p[0].numel() for p in self.params)
        self.state = {name: torch.zeros(size, total, dtype=like.dtype, device=like.device)
                      for name in STATE_NAMES[rule]}
        if rule == "rmsprop":
            self.state["moving_mean_squared"].fill_(1.0)  # r_0 = 1, as climin

    def _columns(self, like: Tensor) -> None:
        h = self.hyper
        self.alpha, self.gamma, self.beta = (_column(h[n], like) for n in ("alpha", "gamma", "beta"))
        self.one_minus_gamma = _column([1 - d for d in h["gamma"]], like)  # rounded from float64, as `value=`
        self.offset = _column(h["offset"], like)
        self.renormalise = any(t is not None for t in h["threshold"])
        self.threshold = _column([t if t is not None else 1.0 for t in h["threshold"]], like)
        self.has_threshold = _column([t is not None for t in h["threshold"]], like).bool()

    @property
    def numels(self) -> list[int]:
        return [p[0].numel() for p in self.params]

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [v.view_as(p) for v, p in zip(flat.split(self.numels, dim=1), self.params)]

    def _member(self, tensors: list[Tensor], k: int) -> list[Tensor]:
        return [t[k] for t in tensors]

    def _renormalise(self, grad: Tensor) -> None:
        """`renormalise_gradients` per member: the norm of the per-parameter norms, scaled to the threshold."""
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)
                             for g in grad.split(self.numels, dim=1)], dim=1)
        norm = torch.linalg.vector_norm(norms, dim=1, keepdim=True)  # (K, 1)
        factor = (self.threshold / norm).clamp_(max=1.0)
        grad.mul_(torch.where(self.has_threshold, factor, 1.0))

    def _gradient_step(self, grad: Tensor) -> Tensor:
        """Δ(g_t), climin's `step2`, per member; updates the gradient averages."""
        if self.rule == "rmsprop":
            r = self.state["moving_mean_squared"]
            r.mul_(self.gamma).addcmul_(grad * self.one_minus_gamma, grad)
            return torch.mul(grad, self.alpha).div_(r.add(self.offset).sqrt_())
        gms = self.state["gms"]
        gms.mul_(self.gamma).addcmul_(grad * self.one_minus_gamma, grad)
        return (self.state["sms"] + self.offset).sqrt_().div_(gms.add(self.offset).sqrt_()).mul_(grad).mul_(self.alpha)

    @torch.no_grad()
    def step(self) -> None:
        size = self.params[0].shape[0]
        grad = torch.cat([p.grad.reshape(size, -1) for p in self.params], dim=1)  # (K, P)
        if self.renormalise:
            self._renormalise(grad)
        step2 = self._gradient_step(grad)
        last = self.state["last_step"]
        last.mul_(self.beta).add_(step2)  # s_t = β s_{t-1} + Δ
        torch._foreach_sub_(self.params, self._views(step2))
        steps = self._views(last)
        for k in range(size):  # φ_{t+1} = φ_t − Δ − β s_t, with the solo run's fused `alpha=β`
            torch._foreach_sub_(self._member(self.params, k), self._member(steps, k), alpha=self.hyper["beta"][k])
        if self.rule == "adadelta":
            sms = self.state["sms"]
            sms.mul_(self.gamma).addcmul_(last * self.one_minus_gamma, last)

    @torch.no_grad()
    def evaluation_point(self) -> list[Tensor]:
        """climin's resting point θ_t = φ_t + β s_{t-1} of every member, as new tensors."""
        point = [p.detach().clone() for p in self.params]
        steps = self._views(self.state["last_step"])
        for k in range(point[0].shape[0]):
            torch._foreach_add_(self._member(point, k), self._member(steps, k), alpha=self.hyper["beta"][k])
        return point

    def select(self, positions: list[int], params: list[Tensor]) -> None:
        """Keep only the members at `positions`; `params`: the model's parameters after its own `select`."""
        index = torch.tensor(positions, device=self.params[0].device)
        self.params = list(params)
        self.state = {name: value[index].clone() for name, value in self.state.items()}
        self.hyper = {name: [values[i] for i in positions] for name, values in self.hyper.items()}
        self._columns(self.params[0])

    def member_state(self, pos: int) -> list[dict[str, Tensor]]:
        """Member `pos`'s state, one dict per parameter (fresh tensors of the parameter's shape)."""
        views = {name: self._views(value) for name, value in self.state.items()}
        return [{name: views[name][i][pos].clone() for name in self.state} for i in range(len(self.params))]

    def member_state_dict(self, pos: int, defaults: dict) -> dict:
        """Member `pos`'s state as its solo climin optimiser's `state_dict()`; `defaults`: the
        hyperparameters of its parameter group."""
        entries = self.member_state(pos)
        return {"state": dict(enumerate(entries)),
                "param_groups": [{**defaults, "params": list(range(len(entries)))}]}

    def load_member_state_dict(self, pos: int, state: dict) -> None:
        """`load_member` from a solo optimiser's `state_dict()` (`member_state_dict`'s layout)."""
        self.load_member(pos, [state["state"][i] for i in range(len(self.params))])

    @torch.no_grad()
    def load_member(self, pos: int, state: list[dict[str, Tensor]]) -> None:
        views = {name: self._views(value) for name, value in self.state.items()}
        for i, entry in enumerate(state):
            for name in self.state:
                views[name][i][pos].copy_(entry[name])
