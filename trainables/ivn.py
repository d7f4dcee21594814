"""IVN: implicit variance network (Section 2.6.1, Table 7).

A fast-dropout net (`trainables.nn.fdnet.FastDropoutNet`) whose propagated output moments ARE the
predictive distribution, trained on the implicit variance loss, the Gaussian NLL

    L_iv = 1/2 r^T Sigma^-1 r + log (2 pi)^{D/2} |Sigma|^{1/2},  Sigma = diag(V[y]), r = z - E[y],

with every layer's variance scaled by a learned beta > beta_min (V[y'] = beta V[y]); beta_min and
the input's variance are hyper-parameters of the random search (Section 2.6.3). A floor of 1e-6 on
V[y] guards the loss where no noise reaches the output (all rates and the input variance 0).

Cohorts (`train_cohort`, `trainables.kit.fast_dropout`): as FD's (`trainables.fd`, the same
`COHORT_KEYS`, the minibatch size, and small nets padded), and each member also keeps its input variance and
beta_min (tensors with one entry per member in the stacked net, `trainables.nn.stacked_fdnet`,
whose betas are each member's rows of the stacked `rho`). Each member reports what its solo
`train` reports, up to the float rounding of batched matmuls and of the written-out gradient:
within 1e-5 relative after 20 epochs on the toy set (tests/test_cohort_fd.py,
tests/test_cohort_padded.py).
"""

from __future__ import annotations

import dataclasses

import torch

from seqrep.method import Session
from trainables.kit import fast_dropout, padded_networks, regression_fit
from trainables.kit.fast_dropout import FastDropoutConfig, predictive
from trainables.nn import loss_gradients
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.feedforward import rmsprop
from trainables.nn.gaussian import VARIANCE_FLOOR, gaussian_nll

COHORT_KEYS = ("batch_size",)  # what the members of a cohort share
COHORT_PADDED = padded_networks.PADDED_KEYS  # what they may differ in: small nets are padded to one shape


@dataclasses.dataclass(frozen=True)
class Config(FastDropoutConfig):
    """FD's configuration (`trainables.kit.fast_dropout.FastDropoutConfig`) plus the input variance
    and the floor of beta."""

    input_variance: float = 0.0  # the constant variance V[x] given to every input
    beta_min: float = 1e-3  # beta > beta_min for every layer's variance scale

    def __post_init__(self):
        super().__post_init__()
        self.check([("input_variance", "input_variance >= 0", self.input_variance >= 0),
                    ("beta_min", "beta_min >= 0", self.beta_min >= 0)])



cohort_group = padded_networks.cohort_group(COHORT_KEYS, Config)  # the engine's grouping into cohorts

def build(config: Config, n_inputs: int, n_outputs: int) -> FastDropoutNet:
    """The network `train` trains (and each `train_cohort` member, right after its seed is set)."""
    return FastDropoutNet(n_inputs, n_outputs, config.hidden_layers, config.hidden_units, config.transfer,
                          config.p_drop_input, config.p_drop_hidden, config.input_variance, beta_min=config.beta_min)


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    torch.manual_seed(session.context.seed)
    model = build(config, data.x_train.shape[1], data.y_train.shape[1])
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, variance = predictive(model, x)
        nll = gaussian_nll(y, mean, variance)
        return nll.mean(), mean, nll

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: gaussian_nll(y, *predictive(model, x)).mean(),
        predict=lambda x: predictive(model, x), score=score, config=config.to_dict(), title="IVN",
        evaluation_point=optimizer.climin_point,
    )


def mean_nll(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """L_iv per member: the Gaussian NLL of the floored moments averaged over points, (M,)."""
    return gaussian_nll(y, mean, variance).mean(dim=-1)


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (module docstring); one session per member."""
    fast_dropout.train_cohort(configs, sessions, build=build, objective=mean_nll, title="IVN",
                              gradient=lambda raw, y: loss_gradients.moments_gaussian_nll(raw, y, VARIANCE_FLOOR))
