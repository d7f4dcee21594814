"""FAWN-ROPD: regularised direct optimisation of the predictive distribution (Section 2.6.2.2, Tables 7, 8).

Gaussian weights q(theta) propagated in closed form (`trainables.nn.fawn`), trained on

    L = sum_i -log N(z_i | E[y_i], V[y_i] + sigma_hat^2) + KL[q || p],

the approximate predictive distribution of Eq. (26) with the likelihood's noise, regularised by the
KL to the learned reference distribution p = N(mu~, sigma~^2) (no regularisation coefficient).
The trainer is FAWN-VB's (`trainables.kit.fawn_fit`): Adam 0.001, model selection on the
training loss, so the `valid_*` metrics are the training split's.

Cohorts (`train_cohort`, `COHORT_KEYS`; `trainables.kit.fawn_cohort`): trials that share layers,
units, transfer function and batch size train as one stacked network, each on its own UCI split
(Table 8's grid), each reported, checkpointed and finished as its solo run up to float rounding.
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Session
from trainables.kit import fawn_cohort
from trainables.kit.fawn_fit import FAWNConfig, train_fawn
from trainables.nn.fawn import ropd_point_loss


@dataclasses.dataclass(frozen=True)
class Config(FAWNConfig):
    pass


def train(config: Config, session: Session) -> None:
    train_fawn(config, session, ropd_point_loss, "FAWN-ROPD")


COHORT_KEYS = fawn_cohort.COHORT_KEYS
COHORT_OF_ONE = True  # its cohort trainer is faster even for one config (README, "Cohorts")


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (`trainables.kit.fawn_cohort`); one session per member."""
    fawn_cohort.train_fawn_cohort(configs, sessions, fawn_cohort.ropd_loss, "FAWN-ROPD")
