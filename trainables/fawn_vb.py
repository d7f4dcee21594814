"""FAWN-VB: fast adaptive weight noise as closed-form variational Bayes (Section 2.6.2.1, Tables 7, 8).

Gaussian weights q(theta) propagated in closed form (`trainables.nn.fawn`), trained on

    L = sum_i -E_q[log N(z_i | y_i, sigma_hat^2)] + KL[q || p],

with E[log N(z | y, s2)] = -V[y] / (2 s2) - (z - E[y])^2 / (2 s2) - log sqrt(2 pi s2) and the
learned global prior p = N(mu~, sigma~^2). Predictive distribution N(E[y], V[y] + sigma_hat^2).
Adam 0.001, model selection on the training loss (the `valid_*` metrics are the training split's),
as for FAWN-ROPD: `trainables.kit.fawn_fit` trains both.
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Session
from trainables.kit.fawn_fit import FAWNConfig, train_fawn
from trainables.nn.fawn import vb_point_loss


@dataclasses.dataclass(frozen=True)
class Config(FAWNConfig):
    pass


def train(config: Config, session: Session) -> None:
    train_fawn(config, session, vb_point_loss, "FAWN-VB")
