"""RI: a randomly initialised, untrained RNN as an echo-state baseline (Section 3.5.1.1, Tables 10-12).

Weights ~ N(0, init_std^2), W_rec rescaled to `spectral_radius` (Section 1.3.3); the embedding is
the pooled hidden state rho(h_1:T). Nothing is trained: the trial runs one evaluation "epoch"
(the space's `max_epochs: 1`; more epochs repeat the same evaluation), and is exempt from the
improved-during-training rule (`valid_improved` is 1). Judged by a logistic regression on the
training embeddings (`trainables.kit.reduction_run`).
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Declaration, Session
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",))


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
