"""What every sequence-reduction method declares: its configuration fields and its `Problem`.

`ReductionConfig` holds the fields shared by `nca`, `ce`, `ri`, `osp`, `rim` and `sf` (Sections
3.4.3.1 and 3.5.2); each method's `make(data, config)` returns a `Problem` (network, minibatch
loss, embedding, judge) that `trainables.kit.reduction_run.run` trains and judges.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import torch

from seqrep.method import MethodConfig
from trainables.nn.pooled_rnn import PooledRNN, Transfer


@dataclasses.dataclass(frozen=True)
class ReductionConfig(MethodConfig):
    """Fields shared by every sequence-reduction method (Sections 3.4.3.1 and 3.5.2)."""

    transfer: Transfer = "tanh"
    pooling: Literal["max", "sum", "mean", "stochastic"] = "mean"
    hidden_units: int = 32  # UCR 32, TIDIGITS and Characters 64 (Section 3.5.2)
    output_units: int = 16  # the embedding's size: UCR 16, TIDIGITS and Characters 32
    batch_fraction: float = 1.0  # batch size N/8, N/4, N/2 or N: 0.125, 0.25, 0.5, 1
    init_std: float = 0.1  # weights ~ N(0, init_std^2): uniform in [0.005, 1] (Section 3.5.2)
    spectral_radius: float | None = 1.0  # W_rec rescaled to this spectral radius; null: as drawn
    optimizer: Literal["rmsprop", "rprop", "lbfgs"] = "rmsprop"
    step_rate: float = 1e-4  # rmsprop (Section 3.5.2); Rprop's initial step size
    momentum: float = 0.9  # Nesterov momentum of rmsprop
    decay: float = 0.9  # rmsprop's decay
    lbfgs_iterations: int = 20  # inner iterations of L-BFGS per minibatch
    normalise: Literal["none", "sequence", "dataset"] = "none"  # centre and whiten (Section 3.4.3.1)
    penalty: float = 0.0  # lambda of the L2 penalty on all weights but the output bias
    valid_fraction: float = 0.2  # supervised methods: held-out stratified part of the training set

    def __post_init__(self):
        rules = [
            ("hidden_units", "hidden_units >= 1", self.hidden_units >= 1),
            ("output_units", "output_units >= 1", self.output_units >= 1),
            ("batch_fraction", "0 < batch_fraction <= 1", 0 < self.batch_fraction <= 1),
            ("init_std", "init_std > 0", self.init_std > 0),
            ("spectral_radius", "spectral_radius is null or > 0", self.spectral_radius is None or self.spectral_radius > 0),
            ("step_rate", "step_rate > 0", self.step_rate > 0),
            ("momentum", "0 <= momentum < 1", 0 <= self.momentum < 1),
            ("decay", "0 <= decay < 1", 0 <= self.decay < 1),
            ("lbfgs_iterations", "lbfgs_iterations >= 1", self.lbfgs_iterations >= 1),
            ("penalty", "penalty >= 0", self.penalty >= 0),
            ("valid_fraction", "0 < valid_fraction < 1", 0 < self.valid_fraction < 1),
        ]
        self.check(rules)


@dataclasses.dataclass
class Problem:
    """What a method contributes: the network, its loss on a minibatch, what it embeds and how it is judged."""

    model: PooledRNN
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]  # (x, mask, y, gen)
    embed: Callable[[torch.Tensor, torch.Tensor, bool, torch.Generator | None], torch.Tensor]  # (x, mask, training, gen)
    judge: Literal["logreg", "nca", "softmax", "none"]
    supervised: bool
    trains: bool = True
