"""SF: sparse filtering on pooled RNN outputs (Ngiam et al. 2011; thesis Section 3.5.1.4).

Features f_ic = sqrt(e_ic^2 + 1e-8) (Ngiam's soft absolute value) of the embeddings e = rho(y_1:T)
are normalised per feature over the minibatch and then per example, both by the L2 norm, and the
sum of the normalised features (their L1 norm, they are positive) is minimised:

    f~_ic = f_ic / ||f_.c||_2,   f^_i = f~_i / ||f~_i||_2,   L_sf = (1/B) sum_i ||f^_i||_1.

The thesis prints the outer norm as an L2 norm with the footnote "we deviate from the original
formulation by using the L2 norm instead of the theoretically more sound L1 norm". Taken
literally that loss is constant (every f^_i has unit L2 norm), so we read the footnote as being
about the normalisations, which are L2 here as in Ngiam et al.'s paper and code, and keep the L1
sparsity term; the first normalisation uses the minibatch, not the whole data set; the mean over
the batch replaces the sum (a constant factor). `penalty` weighs an L2 term on all weights but the
output bias (the "penalty weight" Section 3.5.2 draws for every criterion).

Cohorts (`train_cohort`, `trainables.kit.reduction_cohort`): members share `hidden_units`,
`output_units`, `batch_fraction`, `optimizer` (rmsprop; another optimiser runs the members solo,
one after another) and `normalise` (COHORT_KEYS: shapes, minibatch layout, optimiser, data);
transfer, pooling, init_std, spectral radius, penalty, step rate, decay and momentum are each
member's own.
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


def sparse_filtering(e: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """L_sf of the module docstring for embeddings e (B, K), or (..., B, K) giving one loss per leading index."""
    f = torch.sqrt(e ** 2 + eps)
    f = f / f.norm(dim=-2, keepdim=True)
    f = f / f.norm(dim=-1, keepdim=True)
    return f.sum(-1).mean(-1)


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, config.output_units, config.transfer)

    def embed(x, mask, training, generator):
        return pool(model.outputs(model.hidden(x)), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        return sparse_filtering(embed(x, mask, True, generator))

    return Problem(model, loss, embed, judge="logreg", supervised=False)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "SF")


def make_cohort(model, configs: list[Config]) -> CohortProblem:
    """`make` for a stack of members: each member's L_sf on its own minibatch, (K,)."""
    embed = pooled_embedding(model, configs, outputs=True)

    def loss(x, mask, generators):
        return sparse_filtering(embed(x, mask, True, generators))

    return CohortProblem(embed, loss)


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    run_cohort(configs, sessions, make, make_cohort, "SF")
