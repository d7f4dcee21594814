"""FD: a fast-dropout regression net trained on the squared error of its mean (Table 7, Section 2.6.3).

Fast dropout by variance propagation (Section 2.5; `trainables.nn.fdnet.FastDropoutNet`, dropout on
the inputs of every layer, rates `p_drop_input` / `p_drop_hidden`). Training minimises the squared
error of the propagated mean E[y] only. The predictive distribution reported is N(E[y], V[y]) with
the variance fast dropout propagates: it is never trained, which is why FD's NLL explodes in
Table 7 (43486.7 on toy). A floor of 1e-6 on V[y] keeps the NLL finite where no dropout noise
reaches the output (all rates 0; `trainables.kit.fast_dropout.predictive`).

Cohorts (`train_cohort`, `trainables.kit.fast_dropout`): trials of one random search that agree on
`COHORT_KEYS` (the minibatch size, which fixes every minibatch's shape) train as one stacked
fast-dropout net (`trainables.nn.stacked_fdnet`); they may differ in the seed, the transfer
function, both dropout rates and rmsprop's step rate, decay and momentum, and, where their nets are
small (`trainables.kit.padded_networks`: `cohort_group`, `COHORT_PADDED`), in depth and width,
each padded to the cohort's largest. The
transfer is not a cohort key: its moment rules are elementwise, so a mixed cohort computes both
and picks each member's, which costs no more than splitting the cohort in two (the stacked net's
docstring). Each member reports what its solo `train` reports, up to the float rounding of batched
matmuls and of the written-out gradient: within 1e-5 relative after 20 epochs on the toy set
(tests/test_cohort_fd.py, tests/test_cohort_padded.py).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from seqrep.method import Session
from trainables.kit import fast_dropout, padded_networks, regression_fit
from trainables.kit.fast_dropout import FastDropoutConfig, predictive
from trainables.nn import loss_gradients
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.feedforward import rmsprop
from trainables.nn.gaussian import gaussian_nll

COHORT_KEYS = ("batch_size",)  # what the members of a cohort share
COHORT_PADDED = padded_networks.PADDED_KEYS  # what they may differ in: small nets are padded to one shape


@dataclasses.dataclass(frozen=True)
class Config(FastDropoutConfig):
    """The shared regression fields and fast dropout's rates (`trainables.kit.fast_dropout`)."""



cohort_group = padded_networks.cohort_group(COHORT_KEYS, Config)  # the engine's grouping into cohorts

def build(config: Config, n_inputs: int, n_outputs: int) -> FastDropoutNet:
    """The network `train` trains (and each `train_cohort` member, right after its seed is set)."""
    return FastDropoutNet(n_inputs, n_outputs, config.hidden_layers, config.hidden_units, config.transfer,
                          config.p_drop_input, config.p_drop_hidden)


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    torch.manual_seed(session.context.seed)
    model = build(config, data.x_train.shape[1], data.y_train.shape[1])
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predictive(model, x)
        return F.mse_loss(mean, y), mean, gaussian_nll(y, mean, variance)

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: F.mse_loss(model(x)[0], y),
        predict=lambda x: predictive(model, x), score=score, config=config.to_dict(), title="FD",
        evaluation_point=optimizer.climin_point,
    )


def squared_error(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """`F.mse_loss(mean, y)` per member, (M,) from (M, n, d): the variance is not trained."""
    return ((mean - y) ** 2).mean(dim=(-2, -1))


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (module docstring); one session per member."""
    fast_dropout.train_cohort(configs, sessions, build=build, objective=squared_error, title="FD",
                              gradient=loss_gradients.moments_squared_error)
