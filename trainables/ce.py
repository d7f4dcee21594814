"""CE: an RNN with pooling trained as a softmax classifier by cross entropy (Section 3.4.3.2, Table 11).

The supervised baseline of Section 3.4.3.2: the pooled outputs are the logits of a softmax over
the classes (so `output_units` is ignored: the output layer has one unit per class), trained on
the cross entropy; the classifier is that softmax (`valid_error`, `test_error`). Validation: a
held-out stratified part of the training set (`valid_fraction`; TIDIGITS: 240 of 2240).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch.nn.functional as F

from seqrep.method import Declaration, Session
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_run import run
from trainables.nn.pooled_rnn import PooledRNN
from trainables.nn.pooling import pool

DECLARES = Declaration(row_requires=("valid_improved",))


@dataclasses.dataclass(frozen=True)
class Config(ReductionConfig):
    transfer: Literal["tanh", "softsign", "rectifier", "softplus", "sigmoid", "lstm"] = "lstm"
    pooling: Literal["max", "sum", "mean", "stochastic"] = "max"


def make(data, config: Config):
    model = PooledRNN(data.n_features, config.hidden_units, data.n_classes, config.transfer, out_transfer="identity")

    def embed(x, mask, training, generator):
        return pool(model.outputs(model.hidden(x)), mask, config.pooling, training, generator)

    def loss(x, mask, y, generator):
        return F.cross_entropy(embed(x, mask, True, generator), y)

    return Problem(model, loss, embed, judge="softmax", supervised=True)


def train(config: Config, session: Session) -> None:
    run(config, session, make, "CE")
