"""The feed-forward body of the regression methods of Section 2.6.3, rmsprop and seeded minibatches.

The NN and DN rows of Table 7 (`trainables.mlp`, `trainables.mdn`) differ only in their output
layer and loss. What they share lives here: the network body (hidden layers of one transfer
function, Section 2.6.3: "the number of hidden layers (either 1, 2 or 3), the transfer function
(sigmoid or rectifier)"), rmsprop built from the thesis's three parameters and seeded minibatches.
The training skeleton, the metrics and the plot of a 1-d predictive distribution are method code
(`trainables.kit.regression_fit`, `trainables.kit.predictive_plot`).
"""

from __future__ import annotations

from typing import Iterator, Literal

import torch
from torch import nn

from trainables.nn.optim import RmsProp

Transfer = Literal["sigmoid", "rectifier"]
TRANSFERS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "rectifier": nn.ReLU}


class MLP(nn.Module):
    """f(x) = W_{L+1} h_L + b_{L+1} with h_l = g(W_l h_{l-1} + b_l), h_0 = x, l = 1..L.

    L = `hidden_layers` layers of `hidden_units` units each, g the sigmoid or the rectifier
    max(0, a), and a linear output of width `n_outputs`; the methods give that output its meaning
    (a mean for NN, mixture parameters for DN/MDN). Weights keep PyTorch's default initialisation:
    the thesis does not state one.
    """

    def __init__(self, n_inputs: int, n_outputs: int, hidden_layers: int, hidden_units: int, transfer: Transfer):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_units), TRANSFERS[transfer]()]
            width = hidden_units
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, n_inputs) -> (n, n_outputs)
        return self.net(x)


def rmsprop(params, step_rate: float, decay: float, momentum: float) -> RmsProp:
    """rmsprop with Nesterov momentum as the thesis ran it (climin's, `trainables.nn.optim`), with
    the thesis's parameter names: step rate, decay rate (of the squared-gradient average) and
    momentum (Section 2.6.3). Validate at `optimizer.climin_point()` (climin's resting point)."""
    return RmsProp(params, step_rate=step_rate, decay=decay, momentum=momentum)


def minibatches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (x, y) minibatches in an order drawn from `generator`; the last may be smaller.

    The permutation is drawn on the CPU, so the generator state the checkpoint carries does not
    depend on the device; the data are gathered once per epoch and then cut into views, which
    keeps the per-batch Python work to the update itself.
    """
    order = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return zip(x[order].split(batch_size), y[order].split(batch_size))


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
