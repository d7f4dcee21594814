"""The configuration and trainer FAWN-VB and FAWN-ROPD share (Sections 2.6.2-2.6.4, Tables 7, 8).

The network, its KL and the two per-point objectives are `trainables.nn.fawn`; a method picks its
per-point term and `train_fawn` minimises its minibatch mean plus KL / N (so that the minibatch
estimate of the whole objective / N is unbiased) with Adam, selecting on the training loss and
stopping on its plateau.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import torch

from seqrep.method import MethodConfig, Session
from trainables.kit import regression_fit
from trainables.nn.fawn import TRANSFER_MOMENTS, FAWNNet

PointLoss = Callable[[FAWNNet, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class FAWNConfig(MethodConfig):
    """FAWN's fixed configurations (Sections 2.6.3, 2.6.4): Adam with step rate 0.001 "until the
    convergence of the training loss", model selection on the training loss."""

    hidden_layers: int = 1  # toy 1, SARCOS 3, UCI 1
    hidden_units: int = 100  # toy and SARCOS 100, UCI 50 (year 100)
    transfer: Literal["sigmoid", "rectifier"] = "rectifier"
    step_rate: float = 1e-3  # Adam's alpha
    batch_size: int = 128  # UCI: 128; the thesis gives none for toy/SARCOS
    init_std: float = 0.2  # weight means ~ N(0, init_std^2) (Section 2.6.4); also the prior's start
    init_noise: float = 0.2  # initial weight standard deviation (ours: the thesis gives none; trainables.nn.fawn)
    # "until convergence": stop once the training loss has not improved by more than
    # `tolerance` (relative) for `patience` epochs; null runs the whole epoch budget
    patience: int | None = 200
    tolerance: float = 1e-4
    split: int = 0  # which train/test split of a UCI set (ignored by other data sets)

    def __post_init__(self):
        rules = [
            ("hidden_layers", "hidden_layers >= 1", self.hidden_layers >= 1),
            ("hidden_units", "hidden_units >= 1", self.hidden_units >= 1),
            ("transfer", "transfer in ('sigmoid', 'rectifier')", self.transfer in TRANSFER_MOMENTS),
            ("step_rate", "step_rate > 0", self.step_rate > 0),
            ("batch_size", "batch_size >= 1", self.batch_size >= 1),
            ("init_std", "init_std > 0", self.init_std > 0),
            ("init_noise", "init_noise > 0", self.init_noise > 0),
            ("patience", "patience is null or >= 1", self.patience is None or self.patience >= 1),
            ("tolerance", "tolerance >= 0", self.tolerance >= 0),
            ("split", "split >= 0", self.split >= 0),
        ]
        self.check(rules)


def train_fawn(config: FAWNConfig, session: Session, point_loss: PointLoss, title: str) -> None:
    """Train a FAWN net on `point_loss(model, x, y)` (n,) + KL / N and report as `title`."""
    data = regression_fit.load(session, split=config.split)
    n_train = data.x_train.shape[0]
    torch.manual_seed(session.context.seed)
    model = FAWNNet(data.x_train.shape[1], data.y_train.shape[1], config.hidden_layers, config.hidden_units,
                    config.transfer, config.init_std, config.init_noise)
    model.to(session.context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.step_rate)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return point_loss(model, x, y).mean() + model.kl() / n_train

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size, loss=loss,
        predict=model.predictive, config=config.to_dict(), title=title,
        select_on_training=True, patience=config.patience, tolerance=config.tolerance,
    )
