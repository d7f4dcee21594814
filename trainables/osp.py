"""OSP: an RNN trained on one-step prediction; the pooled hidden state is the embedding (Section 3.5.1.2).

Linear outputs y_t = W_out h_t + b_out predict x_t+1 under a fixed-variance Gaussian, so the loss
is the squared error L_osp = sum_i sum_{t<T} sum_c (y_t,c - x_t+1,c)^2; here averaged over the
predicted frames of the minibatch (padding never counts) instead of summed (a constant factor).
The embedding is rho(h_1:T), so `output_units` is unused (the output layer has the input's size).
`penalty` weighs an L2 term on all weights but the output bias (the space's "penalty weight",
which Section 3.5.2 draws for every criterion). Judged by logistic regression
(`trainables.kit.reduction_run`).

Cohorts (`train_cohort`, `trainables.kit.reduction_cohort`): members share `hidden_units`,
`batch_fraction`, `optimizer` (rmsprop; another optimiser runs the members solo, one after
another) and `normalise` (COHORT_KEYS: shapes, minibatch layout, optimiser, data); transfer,
pooling, init_std, spectral radius, penalty, step rate, decay and momentum are each member's own.
`output_units` fixes nothing here (the output layer has the input's size).
"""

from __future__ import annotations

import dataclasses

from seqrep.method import Declaration, Session
from trainables.kit.reduction_cohort import CohortProblem, pooled_embedding, run_cohort
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool
from trainables.nn.sequences import frame_count, masked_sum
from trainables.nn.stacked_rnn import member_masked_mean

DECLARES = Declaration(row_requires=("valid_improved",))
COHORT_KEYS = ("hidden_units", "batch_fraction", "optimizer", "normalise")


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    pass


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, data.n_features, config.transfer, out_transfer="identity")

    def embed(x, mask, training, generator):
        return pool(model.hidden(x), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        prediction = model.out(model.hidden(x))[:-1]  # y_1..y_T-1 predict x_2..x_T
        target_mask = mask[1:]
        if frame_count(target_mask) == 0:
            return (prediction * 0).sum()
        return masked_sum((prediction - x[1:]) ** 2, target_mask) / frame_count(target_mask)

    return Problem(model, loss, embed, judge="logreg", supervised=False)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "OSP")


def make_cohort(model, configs: list[Config]) -> CohortProblem:
    """`make` for a stack of members: each member's mean squared one-step error, (K,)."""

    def loss(x, mask, generators):
        prediction = model.out(model.hidden(x))[:-1]  # (T-1, K, B, D)
        return member_masked_mean((prediction - x[1:]) ** 2, mask[1:])

    return CohortProblem(pooled_embedding(model, configs, outputs=False), loss)


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    run_cohort(configs, sessions, make, make_cohort, "OSP")
