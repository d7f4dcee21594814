"""sRNN, LSTM, FD-RNN and FD-LSTM on the piano-roll benchmarks (thesis Section 2.5.2, Tables 1-6).

Each piece x_1:T of 88-d binary frames is modelled by the cascade p(x_1:T) = prod_t p(x_t | x_1:t-1)
(Section 2.5.2.1): the network reads x_0 = 0, x_1, ..., x_T-1 and its Bernoulli outputs at step t
give p(x_t | x_1:t-1). The loss is the Bernoulli negative log-likelihood summed over the 88 notes,
averaged over the frames of a minibatch; padding never counts.

Metrics per split: `nll`, the total negative log-likelihood over all frames divided by the number
of frames, in nats (the convention of Tables 3, 6 and 13), and `nll_seq`, the mean over sequences
of each sequence's per-frame NLL. Selection uses `valid_nll`; `test_*` are measured at the best
validation epoch.

The model is `trainables.nn.recurrent.FastDropoutRNN` (FD when any dropout rate is above 0). The
optimisers are climin's rmsprop and Adadelta with Nesterov momentum (`trainables.nn.optim`), as
the thesis authors used them; validation looks at climin's parameter point, not the look-ahead
point PyTorch's formulation keeps between steps.

Table 1's ν is sparse initialisation (`nu`: every unit keeps nu of its incoming weights in W_in,
W_rec and W_out, `trainables.nn.initialise`; "no" is `nu: null`), applied before ρ. Gradient
renormalisation (Section 1.3's τ, Pascanu et al. 2012: gradients projected to norm `grad_norm`
when longer) is a non-thesis option, off (`null`) in the thesis's spaces.

The LSTM of Tables 4 and 6 is the thesis's cell (`cell: lstm`, Section 1.3.4 and breze's FD-LSTM,
`trainables.nn.lstm_cells`): unsquashed cell input, output sigma(s_t) sigma(o_t). torch's LSTM
(`cell: torch-lstm`, tanh cell input and tanh(c_t) sigma(o_t), cuDNN on a GPU) is a non-thesis
option.

Choices the thesis leaves open: the minibatch size (`batch_size` sequences, bucketed by length),
the epoch budget (the space's `max_epochs`; the thesis trained "until convergence" and selected on
validation), and the rmsprop offset (climin's fixed 1e-8).

Cohorts (`train_cohort`, `COHORT_KEYS`; `trainables.kit.rnn_cohort`): trials that share cell,
hidden units, batch size and optimiser train together, each reported, checkpointed and finished
as its solo run. Tanh nets (sRNN, FD-RNN: Tables 1, 3, 4) run as one stacked model; LSTM nets run
their solo models in lockstep, one epoch each in turn, which saves nothing but keeps the contract.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from seqrep.method import MethodConfig, Session
from trainables.kit import rnn_cohort
from trainables.kit.rnn_model import build_model, evaluate_nll, frame_nll, order_generator, train_epoch  # noqa: F401
from trainables.kit.sequence_models import climin_optimizer, fd_rnn_rules, sequence_data, tensor_splits
from trainables.kit.training import fit
from trainables.nn.sequences import shift  # noqa: F401 (tests read it from here)


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    # tanh: sRNN / FD-RNN; lstm: the thesis's LSTM / FD-LSTM; torch-lstm: torch's cell (not the thesis's)
    cell: Literal["tanh", "lstm", "torch-lstm"] = "tanh"
    hidden_units: int = 200  # Table 1: 200, 400, 600; Table 4: 200...600 (tanh) / 100...300 (LSTM)
    p_drop_input: float = 0.0  # p("dropout input")
    p_drop_hidden: float = 0.0  # p("dropout hidden to hidden")
    p_drop_output: float = 0.0  # p("dropout hidden to output")
    fd_final_layer: bool = True  # "use fast dropout for final layer"
    optimizer: Literal["rmsprop", "adadelta"] = "rmsprop"
    step_rate: float = 1e-3
    momentum: float = 0.0  # Nesterov momentum
    decay: float = 0.9
    offset: float = 1e-4  # Adadelta's offset (climin's default); rmsprop uses climin's fixed 1e-8
    sigma2: float = 0.01  # initial variance of W_rec and W_out
    sigma2_in: float = 0.01  # initial variance of W_in
    b_h: float = 0.0
    b_y: float = -0.8
    rho: float | None = 1.1  # spectral radius of W_rec (tanh only); null: as drawn
    nu: int | None = None  # Table 1's ν: incoming weights kept per unit at initialisation; null: dense
    grad_norm: float | None = None  # not the thesis's: renormalise gradients above this norm; null: never
    batch_size: int = 16  # sequences per minibatch

    def __post_init__(self):
        self.check([("hidden_units", "hidden_units >= 1", self.hidden_units >= 1), *fd_rnn_rules(self)])


def train(config: Config, session: Session) -> None:
    ctx = session.context
    device = torch.device(ctx.device)
    data = sequence_data(session, "rnn", "jsb, nottingham, piano-midi, musedata")
    splits = tensor_splits(data)
    model = build_model(config, data.n_features, ctx.seed).to(device)
    optimizer = climin_optimizer(config, model.parameters())
    order = order_generator(ctx.seed)
    fit(session, model=model, optimizer=optimizer,
        train_epoch=lambda: train_epoch(model, optimizer, splits["train"], config, order, device),
        evaluate=lambda split: evaluate_nll(model, splits[split], device), config=config.to_dict(),
        generator=order, evaluation_point=optimizer.climin_point)


# Cohorts (seqrep.method's contract): what fixes a tensor shape, the minibatch layout (batch size:
# every member takes as many optimiser steps per epoch) or the optimiser's state layout.
COHORT_KEYS = rnn_cohort.COHORT_KEYS


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train K trials as one stacked model (`trainables.kit.rnn_cohort`): tanh cells (sRNN and
    FD-RNN) run vectorised over members; LSTM cells run their members' solo models in lockstep,
    one epoch each in turn (no speed-up, but the same reports, checkpoints and resume)."""
    rnn_cohort.train_cohort(configs, sessions)
