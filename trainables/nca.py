"""NCA: an RNN with pooling trained by neighbourhood component analysis (thesis Section 3.4, Table 9).

The embedding e = rho(y_1:T) of Section 3.3 is trained to minimise NCA's negative expected number
of correctly classified points (Goldberger et al. 2004; Section 3.4.1),

    L_nca = - sum_i sum_j p_ij [c_i = c_j],   p_ij = exp(-||e_i - e_j||^2) / sum_{z != i} exp(-||e_i - e_z||^2),

with p_ii = 0, on minibatches ("batches containing roughly 1000 samples", Section 3.4.1); here the
mean over the batch instead of the sum (a constant factor). Classification (Section 3.4.2): 1-NN
(scikit-learn) with the training embeddings as database. Metrics: `valid_error` / `test_error`
(1-NN error), `valid_nca_prob` / `test_nca_prob` (mean probability that NCA's stochastic
classifier is right, database: the training embeddings), `valid_nca_error` / `test_nca_error`
(1 - that probability: Table 11's NCA cell, 0.021 = 1 - 0.979, is this, not a 1-NN error),
`test_1nn_accuracy`, and at the best epoch `train_nca_prob` (leave-one-out on the training part)
- the columns of Table 9.

Choices the thesis leaves open: selection is on a held-out stratified 20% of the training set
(the thesis selected "on the training set"); the embedding size (`output_units`); Rprop's and
L-BFGS's settings (PyTorch's defaults, `trainables.kit.reduction_run`). The shared network is
`trainables.nn.pooled_rnn`; optimisers, split and evaluation are in `trainables.kit`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqrep.method import Declaration, Session
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.neighbourhood import nca_probabilities
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",), train_metrics=("train_nca_prob",))


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    optimizer: Literal["rmsprop", "rprop", "lbfgs"] = "rprop"  # Section 3.4.3.1: Rprop or L-BFGS
    step_rate: float = 0.01  # Rprop's initial step size (PyTorch's default)


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, config.output_units, config.transfer)

    def embed(x, mask, training, generator):
        return pool(model.outputs(model.hidden(x)), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        e = embed(x, mask, True, generator)
        if len(e) < 2:  # a lone point has no neighbours
            return (e * 0).sum()
        return -nca_probabilities(e, y).mean()


    return Problem(model, loss, embed, judge="nca", supervised=True)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "NCA")
