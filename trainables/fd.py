"""FD: a fast-dropout regression net trained on the squared error of its mean (Table 7, Section 2.6.3).

Fast dropout by variance propagation (Section 2.5; `trainables.nn.fdnet.FastDropoutNet`, dropout on
the inputs of every layer, rates `p_drop_input` / `p_drop_hidden`). Training minimises the squared
error of the propagated mean E[y] only. The predictive distribution reported is N(E[y], V[y]) with
the variance fast dropout propagates: it is never trained, which is why FD's NLL explodes in
Table 7 (43486.7 on toy). A floor of 1e-6 on V[y] keeps the NLL finite where no dropout noise
reaches the output (all rates 0; `trainables.kit.fast_dropout.predictive`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from seqrep.method import Session
from trainables.kit import regression_fit
from trainables.kit.fast_dropout import FastDropoutConfig, predictive
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.feedforward import rmsprop
from trainables.nn.gaussian import gaussian_nll


@dataclasses.dataclass(frozen=True)
class Config(FastDropoutConfig):
    """The shared regression fields and fast dropout's rates (`trainables.kit.fast_dropout`)."""


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    torch.manual_seed(session.context.seed)
    model = FastDropoutNet(data.x_train.shape[1], data.y_train.shape[1], config.hidden_layers, config.hidden_units,
                           config.transfer, config.p_drop_input, config.p_drop_hidden)
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predictive(model, x)
        return F.mse_loss(mean, y), mean, gaussian_nll(y, mean, variance)

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: F.mse_loss(model(x)[0], y),
        predict=lambda x: predictive(model, x), score=score, config=config.to_dict(), title="FD",
        evaluation_point=optimizer.climin_point,
    )
