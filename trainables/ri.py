"""RI: a randomly initialised, untrained RNN as an echo-state baseline (Section 3.5.1.1, Tables 10-12).

Weights ~ N(0, init_std^2), W_rec rescaled to `spectral_radius` (Section 1.3.3); the embedding is
the pooled hidden state rho(h_1:T). Nothing is trained: the trial runs one evaluation "epoch"
(the space's `max_epochs: 1`; more epochs repeat the same evaluation), and is exempt from the
improved-during-training rule (`valid_improved` is 1). Judged by a logistic regression on the
training embeddings (`trainables.kit.reduction_run`).

Cohorts (`train_cohort`, `trainables.kit.reduction_cohort`): members share `hidden_units` and
`normalise` (COHORT_KEYS: the stacked recurrent layer's shape and the data); transfer, pooling,
init_std and spectral radius are each member's own. Nothing trains, so neither the batch size nor
the optimiser matters; an LSTM member runs solo.
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Declaration, Session
from trainables.kit.reduction_cohort import CohortProblem, pooled_embedding, run_cohort
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",))
COHORT_KEYS = ("hidden_units", "normalise")


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    pass


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, None, config.transfer)

    def embed(x, mask, training, generator):
        return pool(model.hidden(x), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        raise RuntimeError("RI is not trained")

    return Problem(model, loss, embed, judge="logreg", supervised=False, trains=False)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "RI")


def make_cohort(model, configs: list[Config]) -> CohortProblem:
    """`make` for a stack of members (`trainables.nn.stacked_rnn.StackedPooledRNN`)."""
    return CohortProblem(pooled_embedding(model, configs, outputs=False))


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    run_cohort(configs, sessions, make, make_cohort, "RI")
