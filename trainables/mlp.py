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

Cohorts (`train_cohort`, `trainables.kit.cohort_regression`): trials of one random search that
agree on `COHORT_KEYS` (the minibatch size, which fixes every minibatch's shape) train as one
stacked network; they may differ in the seed, the transfer function and rmsprop's step rate, decay
and momentum, and, where their nets are small (`trainables.kit.padded_networks`: `cohort_group`,
`COHORT_PADDED`), in depth and width, each padded to the cohort's largest. Each member reports what
its solo `train` reports, up to the float rounding of batched matmuls (which sum in another
order): within 1e-5 relative after 20 epochs on the toy set (tests/test_cohort.py,
tests/test_cohort_padded.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from seqrep.method import Session
from trainables.kit import padded_networks, regression_fit
from trainables.kit.cohort_regression import Forward, Heads, train_regression_cohort
from trainables.kit.regression_config import RegressionConfig
from trainables.kit.regression_fit import Tensors
from trainables.nn import loss_gradients
from trainables.nn.feedforward import MLP, rmsprop
from trainables.nn.gaussian import gaussian_nll

COHORT_KEYS = ("batch_size",)  # what the members of a cohort share
COHORT_PADDED = padded_networks.PADDED_KEYS  # what they may differ in: small nets are padded to one shape


@dataclasses.dataclass(frozen=True)
class Config(RegressionConfig):
    """The shared regression fields (`trainables.kit.regression_config`), nothing more."""


cohort_group = padded_networks.cohort_group(COHORT_KEYS, Config)  # the engine's grouping into cohorts


def residual_variance(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ML variance of a homoscedastic Gaussian around `prediction`: (..., 1, d) from
    (..., n, d) and y (n, d) (a leading member axis gives each member its own)."""
    return ((y - prediction) ** 2).mean(dim=-2, keepdim=True)


def predictive(forward: Forward, x: torch.Tensor, x_train: torch.Tensor,
               y_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictive mean f(x) and the training residuals' variance, of the same shape."""
    mean = forward(x)
    return mean, residual_variance(forward(x_train), y_train).expand_as(mean)


def build(config: Config, n_inputs: int, n_outputs: int) -> MLP:
    """The network `train` trains (and each `train_cohort` member, right after its seed is set)."""
    return MLP(n_inputs, n_outputs, config.hidden_layers, config.hidden_units, config.transfer)


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    x_train, y_train = (torch.tensor(np.asarray(a, dtype=np.float32), device=session.context.device)
                        for a in data.split("train"))
    torch.manual_seed(session.context.seed)
    model = build(config, x_train.shape[1], y_train.shape[1])
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return predictive(model, x, x_train, y_train)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predict(x)
        return F.mse_loss(mean, y), mean, gaussian_nll(y, mean, variance)

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: F.mse_loss(model(x), y),  # mean over points and output dimensions
        predict=predict, score=score, config=config.to_dict(), title="NN (mlp)",
        evaluation_point=optimizer.climin_point,
    )


def cohort_heads(tensors: Tensors) -> Heads:
    """`train`'s loss, predictive distribution and scores for a leading member axis."""
    x_train, y_train = tensors["train"]

    def squared_error(mean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # F.mse_loss per member: (M,)
        return ((mean - y) ** 2).mean(dim=(-2, -1))

    def predict(forward: Forward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return predictive(forward, x, x_train, y_train)

    def score(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predict(forward, x)
        return squared_error(mean, y), mean, gaussian_nll(y, mean, variance)

    return Heads(loss=squared_error, score=score, predict=predict, gradient=loss_gradients.mean_squared_error)


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (module docstring); one session per member."""
    train_regression_cohort(configs, sessions, build=build, heads=cohort_heads, title="NN (mlp)")
