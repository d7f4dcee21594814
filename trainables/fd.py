"""FD: a fast-dropout regression net trained on the squared error of its mean (Table 7, Section 2.6.3).

Fast dropout by variance propagation (Section 2.5; `trainables.nn.fdnet.FastDropoutNet`, dropout on
the inputs of every layer, rates `p_drop_input` / `p_drop_hidden`). Training minimises the squared
error of the propagated mean E[y] only. The predictive distribution reported is N(E[y], V[y]) with
the variance fast dropout propagates: it is never trained, which is why FD's NLL explodes in
Table 7 (43486.7 on toy). A floor of 1e-6 on V[y] keeps the NLL finite where no dropout noise
reaches the output (all rates 0).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from seqrep.config import MethodConfig
from seqrep.session import Session
from trainables.nn import regression
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.mlp import check_body_config, rmsprop

VARIANCE_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    hidden_layers: int = 1  # 1, 2 or 3 (Section 2.6.3)
    hidden_units: int = 50
    transfer: Literal["sigmoid", "rectifier"] = "rectifier"
    step_rate: float = 1e-3  # rmsprop (climin, Nesterov momentum)
    decay: float = 0.9
    momentum: float = 0.0
    batch_size: int = 10
    p_drop_input: float = 0.2  # dropout rate of the inputs
    p_drop_hidden: float = 0.5  # dropout rate of every hidden layer's outputs

    def __post_init__(self):
        check_body_config(self)
        self.check([(field, f"0 <= {field} < 1", 0 <= getattr(self, field) < 1)
                    for field in ("p_drop_input", "p_drop_hidden")])


def predictive(model: FastDropoutNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = model(x)
    return mean, var.clamp_min(VARIANCE_FLOOR)


def train(config: Config, session: Session) -> None:
    data = regression.load(session)
    torch.manual_seed(session.context.seed)
    model = FastDropoutNet(data.x_train.shape[1], data.y_train.shape[1], config.hidden_layers, config.hidden_units,
                           config.transfer, config.p_drop_input, config.p_drop_hidden)
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)
    regression.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: F.mse_loss(model(x)[0], y),
        predict=lambda x: predictive(model, x), config=config.to_dict(), title="FD",
        evaluation_point=optimizer.climin_point,
    )
