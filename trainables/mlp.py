"""NN: a plain neural network regressor trained on squared error (thesis Section 2.6.3, Table 7).

The "NN" row of Table 7 is a multilayer perceptron with a linear output, trained with rmsprop on
the squared error and selected by random search over layers, transfer function and rmsprop
parameters (Section 2.6.3). It predicts only a mean. To report the NLL column it needs a
predictive variance, which the thesis does not say how it obtained; we use the simplest choice a
mean-only model permits: a homoscedastic Gaussian whose variance is the maximum-likelihood
estimate from the training residuals of the current model,

    s^2_d = mean_i (y_id - f_d(x_i))^2      (over the training points, per output dimension d),

recomputed at every evaluation, so that the NLL at the best epoch uses that epoch's fit. On the
heteroscedastic toy set this variance is necessarily wrong somewhere: that is the point of the
comparison with DN (`trainables/mdn.py`) and IVN.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F

import seqrep.data
from seqrep.config import MethodConfig
from seqrep.session import Session
from trainables.nn.mlp import (
    MLP,
    as_tensors,
    check_body_config,
    minibatches,
    plot_predictive,
    regression_metrics,
    rmsprop,
    seeded_generator,
)
from trainables.nn.training import fit


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    hidden_layers: int = 1  # the thesis searches 1, 2 or 3
    hidden_units: int = 50  # toy: 10, 25, 50 or 100 (Section 2.6.3.1)
    transfer: Literal["sigmoid", "rectifier"] = "rectifier"
    step_rate: float = 1e-3  # rmsprop's step rate (PyTorch's lr)
    decay: float = 0.9  # rmsprop's decay of the squared-gradient average (PyTorch's alpha)
    momentum: float = 0.0
    batch_size: int = 10  # toy: 10, 25 or 50; the smallest sees 5 updates per epoch of 50 points

    def __post_init__(self):
        check_body_config(self)


def residual_variance(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ML variance of a homoscedastic Gaussian around `prediction`: (d,) from (n, d) each."""
    return ((y - prediction) ** 2).mean(dim=0)


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """-log N(y; mean, diag(variance)) per point, in nats: (n,) from (n, d); variance broadcasts."""
    return 0.5 * (torch.log(2 * math.pi * variance) + (y - mean) ** 2 / variance).sum(dim=-1)


def train(config: Config, session: Session) -> None:
    ctx = session.context
    device = torch.device(ctx.device)
    data = seqrep.data.load(ctx.dataset, ctx.data_dir)
    tensors = as_tensors(data, device)
    x_train, y_train = tensors["train"]
    n_train = x_train.shape[0]

    torch.manual_seed(ctx.seed)
    model = MLP(x_train.shape[1], y_train.shape[1], config.hidden_layers, config.hidden_units, config.transfer)
    model.to(device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)
    generator = seeded_generator(ctx.seed)

    def train_epoch() -> float:
        total = torch.zeros((), device=device)  # summed on the device: one sync per epoch, not per batch
        for x, y in minibatches(x_train, y_train, config.batch_size, generator):
            loss = F.mse_loss(model(x), y)  # mean over points and output dimensions
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * x.shape[0]
        return float(total) / n_train

    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = model(x)
        return mean, residual_variance(model(x_train), y_train).expand_as(mean)

    def evaluate(split: str) -> dict[str, float]:
        x, y = tensors[split]
        mean, variance = predict(x)
        return regression_metrics(y, mean, gaussian_nll(y, mean, variance))

    def on_finish() -> None:
        if x_train.shape[1] != 1:
            return
        with torch.no_grad():
            nll = evaluate("test")["nll"]
        title = f"NN (mlp) on {data.name}: test NLL {nll:.3f}"
        plot_predictive(session.artifact_dir / "predictive.png", data, predict, title, device)

    fit(
        session,
        model=model,
        optimizer=optimizer,
        train_epoch=train_epoch,
        evaluate=evaluate,
        config=config.to_dict(),
        generator=generator,
        on_finish=on_finish,
    )
