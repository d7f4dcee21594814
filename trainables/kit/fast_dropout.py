"""What FD and IVN share (Sections 2.5, 2.6.1, Table 7): their configuration, predictive distribution
and cohort trainer.

Both are a fast-dropout net (`trainables.nn.fdnet.FastDropoutNet`) whose propagated output moments
give the predictive distribution N(E[y], V[y]). A floor of 1e-6 on V[y]
(`trainables.nn.gaussian.VARIANCE_FLOOR`) keeps the NLL finite where no dropout noise reaches the
output (all rates 0, and for IVN an input variance of 0).

Cohorts (`train_cohort`): the regression methods' cohort trainer
(`trainables.kit.cohort_regression.train_regression_cohort`) with the fast-dropout nets stacked
(`trainables.nn.stacked_fdnet.StackedFastDropoutNet`, whose raw output is [E[y] | V[y]]) and the
method's minibatch objective on the moments; everything else (initialisation, rmsprop, minibatch
order, selection, divergence, checkpoints, the model file of the solo net) is that trainer's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from seqrep.method import Session
from trainables.kit.cohort_regression import Forward, Gradient, Heads, train_regression_cohort
from trainables.kit.regression_config import RegressionConfig
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.gaussian import VARIANCE_FLOOR, gaussian_nll
from trainables.nn.stacked_fdnet import StackedFastDropoutNet

# (y, E[y], floored V[y]) -> each member's objective (M,), from (M, n, d) each
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class FastDropoutConfig(RegressionConfig):
    """`RegressionConfig` plus fast dropout's rates (FD and IVN, Sections 2.5, 2.6.1)."""

    p_drop_input: float = 0.2  # dropout rate of the inputs
    p_drop_hidden: float = 0.5  # dropout rate of every hidden layer's outputs

    def __post_init__(self):
        super().__post_init__()
        self.check([(field, f"0 <= {field} < 1", 0 <= getattr(self, field) < 1)
                    for field in ("p_drop_input", "p_drop_hidden")])


def predictive(model: FastDropoutNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[y] and the floored V[y] of the net at inputs x, (n, d) each."""
    mean, var = model(x)
    return mean, var.clamp_min(VARIANCE_FLOOR)


def output_moments(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`predictive` from a stacked net's raw output [E[y] | V[y]] (..., n, 2d): (..., n, d) each."""
    mean, var = raw.chunk(2, dim=-1)
    return mean, var.clamp_min(VARIANCE_FLOOR)


def cohort_heads(objective: Objective, gradient: Gradient | None = None) -> Heads:
    """The loss (`objective`), predictive distribution and scores (loss, E[y], Gaussian NLL per
    point) of a solo `train`, for a leading member axis; `gradient`: the objective's closed form
    (`Heads.gradient`), if the method has one."""

    def predict(forward: Forward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return output_moments(forward(x))

    def score(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predict(forward, x)
        return objective(y, mean, variance), mean, gaussian_nll(y, mean, variance)

    return Heads(loss=lambda raw, y: objective(y, *output_moments(raw)), score=score, predict=predict,
                 gradient=gradient)


def train_cohort(configs: Sequence[FastDropoutConfig], sessions: Sequence[Session], *,
                 build: Callable[[Any, int, int], nn.Module], objective: Objective, title: str,
                 gradient: Gradient | None = None) -> None:
    """Train same-shape FD (or IVN) trials as one stacked net (module docstring), member k
    reporting through `sessions[k]`; `build` is the method's, `objective` its minibatch loss and
    `gradient` that loss with its gradient at the raw output in closed form (`Heads.gradient`)."""
    train_regression_cohort(configs, sessions, build=build, heads=lambda tensors: cohort_heads(objective, gradient),
                            title=title, stack=StackedFastDropoutNet)
