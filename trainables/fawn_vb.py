"""FAWN-VB: fast adaptive weight noise as closed-form variational Bayes (Section 2.6.2.1, Tables 7, 8).

Gaussian weights q(theta) propagated in closed form (`trainables.nn.fawn`), trained on

    L = sum_i -E_q[log N(z_i | y_i, sigma_hat^2)] + KL[q || p],

with E[log N(z | y, s2)] = -V[y] / (2 s2) - (z - E[y])^2 / (2 s2) - log sqrt(2 pi s2) and the
learned global prior p = N(mu~, sigma~^2). Predictive distribution N(E[y], V[y] + sigma_hat^2).
Adam 0.001, model selection on the training loss (the `valid_*` metrics are the training split's),
as for FAWN-ROPD: `trainables.kit.fawn_fit` trains both.

Cohorts (`train_cohort`, `COHORT_KEYS`; `trainables.kit.fawn_cohort`): trials that share layers,
units, transfer function and batch size train as one stacked network, each on its own UCI split
(Table 8's grid), each reported, checkpointed and finished as its solo run up to float rounding.
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Session
from trainables.kit import fawn_cohort
from trainables.kit.fawn_fit import FAWNConfig, train_fawn
from trainables.nn.fawn import vb_point_loss


@dataclasses.dataclass(frozen=True)
class Config(FAWNConfig):
    pass


def train(config: Config, session: Session) -> None:
    train_fawn(config, session, vb_point_loss, "FAWN-VB")


COHORT_KEYS = fawn_cohort.COHORT_KEYS
COHORT_OF_ONE = True  # its cohort trainer is faster even for one config (README, "Cohorts")


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (`trainables.kit.fawn_cohort`); one session per member."""
    fawn_cohort.train_fawn_cohort(configs, sessions, fawn_cohort.vb_loss, "FAWN-VB")
