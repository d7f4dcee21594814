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

import numpy as np
import torch
import torch.nn.functional as F

from seqrep.method import Session
from trainables.kit import regression_fit
from trainables.kit.regression_config import RegressionConfig
from trainables.nn.feedforward import MLP, rmsprop
from trainables.nn.gaussian import gaussian_nll


@dataclasses.dataclass(frozen=True)
class Config(RegressionConfig):
    """The shared regression fields (`trainables.kit.regression_config`), nothing more."""


def residual_variance(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ML variance of a homoscedastic Gaussian around `prediction`: (d,) from (n, d) each."""
    return ((y - prediction) ** 2).mean(dim=0)


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    x_train, y_train = (torch.tensor(np.asarray(a, dtype=np.float32), device=session.context.device)
                        for a in data.split("train"))
    torch.manual_seed(session.context.seed)
    model = MLP(x_train.shape[1], y_train.shape[1], config.hidden_layers, config.hidden_units, config.transfer)
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = model(x)
        return mean, residual_variance(model(x_train), y_train).expand_as(mean)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predict(x)
        return F.mse_loss(mean, y), mean, gaussian_nll(y, mean, variance)

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: F.mse_loss(model(x), y),  # mean over points and output dimensions
        predict=predict, score=score, config=config.to_dict(), title="NN (mlp)",
        evaluation_point=optimizer.climin_point,
    )
