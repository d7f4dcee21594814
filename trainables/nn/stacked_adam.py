"""Adam for K networks at once: every member's parameters as one row of a (K, P) tensor.

Adam's rule is elementwise, so `torch.optim.Adam` (torch's defaults: β = (0.9, 0.999),
ε = 1e-8, no weight decay, no amsgrad) on K networks is one update of the (K, P) tensor whose row
k holds member k's P parameters, with each member's step rate on its row, as long as the members
take their steps together (one shared step count t). `StackedAdam.step` computes each entry with
the operations of torch's single-tensor Adam in their order (`lerp_`, `mul_`/`addcmul_`, the bias
corrections in Python floats, `sqrt` / `div` / `add_(ε)`, then θ + (−α_t m) / d), so a member's
update equals its solo Adam's bit for bit given the same gradient (tests/test_cohort_fawn.py).

`keep(rows)` drops the other rows (finished members) from the moments and step rates; a member's
state (`member_state(k)`, `load_member(k, state)`) is its two moment rows and the shared step
count, which its checkpoint holds (`trainables.kit.fawn_cohort`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch


class StackedAdam:
    """Adam on the rows of a (K, P) parameter tensor; `step_rates` α_k, one per row."""

    def __init__(self, like: torch.Tensor, step_rates: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if like.dim() != 2 or like.shape[0] != len(step_rates):
            raise ValueError(f"StackedAdam needs a (K, P) tensor and K step rates, but got a tensor of shape "
                             f"{tuple(like.shape)} and {len(step_rates)} step rates")
        self.step_rates = list(step_rates)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0.0  # torch keeps t as a float32 tensor and reads it back as a Python float
        self.exp_avg = torch.zeros_like(like)
        self.exp_avg_sq = torch.zeros_like(like)

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam step of every row of `param` (K, P), in place, given its gradient (K, P)."""
        self.steps += 1.0
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias_correction1 = 1 - self.beta1 ** self.steps
        bias_correction2_sqrt = (1 - self.beta2 ** self.steps) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        if all(rate == self.step_rates[0] for rate in self.step_rates):
            param.addcdiv_(self.exp_avg, denom, value=-self.step_rates[0] / bias_correction1)
        else:  # addcdiv's θ + (v m) / d with a value per row, v rounded to float32 as addcdiv rounds it
            values = torch.tensor([-rate / bias_correction1 for rate in self.step_rates],
                                  dtype=param.dtype, device=param.device)
            param.add_(self.exp_avg.mul(values[:, None]).div_(denom))

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in this order) of the moments and step rates."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.exp_avg.device)
        self.exp_avg, self.exp_avg_sq = self.exp_avg[index], self.exp_avg_sq[index]
        self.step_rates = [self.step_rates[k] for k in rows]

    def member_state(self, k: int) -> dict[str, Any]:
        """Row k's state, each tensor in a storage of its own (a checkpoint saves whole storages)."""
        return {"step": self.steps, "exp_avg": self.exp_avg[k].clone(), "exp_avg_sq": self.exp_avg_sq[k].clone()}

    def load_member(self, k: int, state: Mapping[str, Any]) -> None:
        """Write row k's moments and the step count (which every row shares) from `member_state`'s form."""
        self.exp_avg[k] = state["exp_avg"].to(self.exp_avg)
        self.exp_avg_sq[k] = state["exp_avg_sq"].to(self.exp_avg_sq)
        self.steps = float(state["step"])
