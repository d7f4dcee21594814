"""The feed-forward body and plumbing shared by the regression methods of Section 2.6.3.

The NN and DN rows of Table 7 (`trainables.mlp`, `trainables.mdn`) differ only in their output
layer and loss. What they share lives here: the network body (hidden layers of one transfer
function, Section 2.6.3: "the number of hidden layers (either 1, 2 or 3), the transfer function
(sigmoid or rectifier)"), rmsprop built from the thesis's three parameters, seeded minibatches,
the regression metrics and the plot of a 1-d predictive distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from torch import nn

from seqrep.data.base import RegressionData
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


def check_body_config(config: Any) -> None:
    """Validate the fields every MLP-based method's Config shares; raise naming the rule and value."""
    rules = [
        ("hidden_layers", "hidden_layers >= 1", config.hidden_layers >= 1),
        ("hidden_units", "hidden_units >= 1", config.hidden_units >= 1),
        ("transfer", "transfer in ('sigmoid', 'rectifier')", config.transfer in TRANSFERS),
        ("step_rate", "step_rate > 0", config.step_rate > 0),
        ("decay", "0 <= decay < 1", 0 <= config.decay < 1),
        ("momentum", "0 <= momentum < 1", 0 <= config.momentum < 1),
        ("batch_size", "batch_size >= 1", config.batch_size >= 1),
    ]
    config.check(rules)


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


def as_tensors(data: RegressionData, device: torch.device | str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every split as float32 tensors on `device`, moved once: the data sets of Section 2.6.3 are
    small enough that copying per batch would cost more than the arithmetic."""
    out = {}
    for split in ("train", "valid", "test"):
        x, y = data.split(split)
        # torch.tensor copies: arrays shipped through Ray's object store are read-only views
        out[split] = (
            torch.tensor(np.asarray(x, dtype=np.float32), device=device),
            torch.tensor(np.asarray(y, dtype=np.float32), device=device),
        )
    return out


def plot_predictive(
    path: Path,
    data: RegressionData,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    title: str,
    device: torch.device | str,
) -> None:
    """Plot a 1-d predictive distribution like the thesis's Figure 6: the test points, the
    predictive mean with a band of +-2 predictive standard deviations, and for the toy set the
    true mean with +-2 true standard deviations. `predict(x)` returns mean and variance, (m, 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: no import-time cost
    from matplotlib.figure import Figure

    xs = np.concatenate([data.split(s)[0][:, 0] for s in ("train", "valid", "test")])
    if data.name == "toy":
        from seqrep.data import toy

        lo, hi = toy.X_LOW, toy.X_HIGH
    else:
        lo, hi = float(xs.min()), float(xs.max())
    grid = np.linspace(lo, hi, 400, dtype=np.float32)
    with torch.no_grad():
        m, v = predict(torch.as_tensor(grid[:, None], device=device))
    m, s = m[:, 0].cpu().numpy(), np.sqrt(v[:, 0].cpu().numpy())

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch inside a worker
    ax = fig.add_subplot()
    if data.name == "toy":
        from seqrep.data import toy

        mu, sd = toy.mean(grid), np.sqrt(toy.variance(grid))
        ax.plot(grid, mu, color="k", lw=1, label="true mean")
        ax.fill_between(grid, mu - 2 * sd, mu + 2 * sd, color="k", alpha=0.1, label="true $\\pm 2\\sigma$")
    ax.plot(grid, m, color="C0", label="predictive mean")
    ax.fill_between(grid, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, label="predictive $\\pm 2\\sigma$")
    x_test, y_test = data.split("test")
    ax.scatter(x_test[:, 0], y_test[:, 0], s=10, color="C3", zorder=3, label="test points")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
