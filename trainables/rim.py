"""RIM: regularised information maximisation on pooled RNN outputs (Gomes et al. 2010; Section 3.5.1.3).

p(z | x) = softmax(e) over the `output_units` entries of the embedding e = rho(y_1:T); the loss is

    L = -( H[p_hat(z)] - (1/N) sum_i H[p(z | x_i)] ) + lambda * sum ||theta||^2   (all but b_out),

with p_hat(z) = (1/N) sum_i p(z | x_i) estimated on the minibatch and lambda = `penalty`. The
embedding e (before the softmax) is judged by logistic regression (`trainables.kit.judges`).
"""

from __future__ import annotations

import dataclasses

import torch

from seqrep.method import Declaration, Session
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",))


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    pass


def entropy(p: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    return -(p * log_p).sum(-1)


def mutual_information(e: torch.Tensor) -> torch.Tensor:
    """MI[z, x] = H[p_hat] - mean_i H[p(z | x_i)] for p(z | x_i) = softmax(e_i), rows of e."""
    log_p = torch.log_softmax(e, dim=1)
    p = log_p.exp()
    p_hat = p.mean(0)
    return entropy(p_hat, torch.log(p_hat.clamp(min=1e-30))) - entropy(p, log_p).mean()


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, config.output_units, config.transfer)

    def embed(x, mask, training, generator):
        return pool(model.outputs(model.hidden(x)), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        return -mutual_information(embed(x, mask, True, generator))  # the L2 term is added by `run`

    return Problem(model, loss, embed, judge="logreg", supervised=False)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "RIM")
