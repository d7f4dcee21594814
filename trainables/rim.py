"""RIM: regularised information maximisation on pooled RNN outputs (Gomes et al. 2010; Section 3.5.1.3).

p(z | x) = softmax(e) over the `output_units` entries of the embedding e = rho(y_1:T); the loss is

    L = -( H[p_hat(z)] - (1/N) sum_i H[p(z | x_i)] ) + lambda * sum ||theta||^2   (all but b_out),

with p_hat(z) = (1/N) sum_i p(z | x_i) estimated on the minibatch and lambda = `penalty`. The
embedding e (before the softmax) is judged by logistic regression (`trainables.kit.judges`).

Cohorts (`train_cohort`, `trainables.kit.reduction_cohort`): members share `hidden_units`,
`output_units`, `batch_fraction`, `optimizer` (rmsprop; another optimiser runs the members solo,
one after another) and `normalise` (COHORT_KEYS: shapes, minibatch layout, optimiser, data);
transfer, pooling, init_std, spectral radius, penalty (lambda), step rate, decay and momentum are
each member's own.
"""

from __future__ import annotations

import dataclasses

import torch

from seqrep.method import Declaration, Session
from trainables.kit.reduction_cohort import CohortProblem, pooled_embedding, run_cohort
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",))
COHORT_KEYS = ("hidden_units", "output_units", "batch_fraction", "optimizer", "normalise")


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    pass


def entropy(p: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    return -(p * log_p).sum(-1)


def mutual_information(e: torch.Tensor) -> torch.Tensor:
    """MI[z, x] = H[p_hat] - mean_i H[p(z | x_i)] for p(z | x_i) = softmax(e_i), rows of e (B, K);
    for e (..., B, K) one value per leading index."""
    log_p = torch.log_softmax(e, dim=-1)
    p = log_p.exp()
    p_hat = p.mean(-2)
    return entropy(p_hat, torch.log(p_hat.clamp(min=1e-30))) - entropy(p, log_p).mean(-1)


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, config.output_units, config.transfer)

    def embed(x, mask, training, generator):
        return pool(model.outputs(model.hidden(x)), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        return -mutual_information(embed(x, mask, True, generator))  # the L2 term is added by `run`

    return Problem(model, loss, embed, judge="logreg", supervised=False)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "RIM")


def make_cohort(model, configs: list[Config]) -> CohortProblem:
    """`make` for a stack of members: each member's -MI on its own minibatch, (K,)."""
    embed = pooled_embedding(model, configs, outputs=True)

    def loss(x, mask, generators):
        return -mutual_information(embed(x, mask, True, generators))  # the L2 term is added by the cohort

    return CohortProblem(embed, loss)


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    run_cohort(configs, sessions, make, make_cohort, "RIM")
