"""DN / MDN: a (mixture) density network trained on the negative log-likelihood (Section 2.6.3).

A mixture density network (Bishop, 1994) turns the output of an MLP into the parameters of a
Gaussian mixture with K components and diagonal covariances,

    p(y | x) = sum_k pi_k(x) N(y; mu_k(x), diag(sigma^2_k(x))),

with pi(x) = softmax of K outputs, mu_k(x) linear outputs and sigma^2_k(x) = softplus(a_k(x)) +
1e-6. It is trained on the mean of -log p(y | x) over a minibatch, computed with log-sum-exp over
the components. The thesis's "density network" (DN, Table 7) is the case K = 1 ("a mixture
density network with only a single component", Section 2.6.3): a network that outputs a mean and
a variance per input, trained on the Gaussian NLL. On the toy set it reaches NN's squared error
but "overfit[s] extremely with respect to [its] predictive distribution" (Section 2.6.3.1).

Choices the thesis leaves open: softplus rather than exp for the variances, because softplus
grows linearly, so one large step cannot move a variance by orders of magnitude, with a floor of
1e-6 that bounds every component's density; and optional gradient-norm clipping (`max_grad_norm`),
a common remedy for the numerical unreliability of conditional Gaussian mixtures (divisions by
the variance), off by default since the thesis mentions none.

Cohorts (`train_cohort`, `trainables.kit.cohort_regression`): the whole network is one MLP body
(its output layer carries the mixture's parameters), so trials that agree on `COHORT_KEYS` (the
minibatch size and K, which fixes the output width) train as one stacked network; they may differ
in the seed, the transfer function, rmsprop's step rate, decay and momentum, `max_grad_norm`
(clipped per member, `torch.nn.utils.clip_grad_norm_`'s rule) and, where their nets are small, in
depth and width, padded to the cohort's largest as NN's (`trainables.kit.padded_networks`). The mixture's
functions below take any leading axes, a member axis included. Each member reports what its solo
`train` reports, up to the float rounding of batched matmuls (which sum in another order).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from seqrep.method import SeqrepError, Session
from trainables.kit import padded_networks, regression_fit
from trainables.kit.cohort_regression import Forward, Heads, train_regression_cohort
from trainables.kit.regression_config import RegressionConfig
from trainables.nn import loss_gradients
from trainables.nn.feedforward import MLP, Transfer, rmsprop
from trainables.nn.gaussian import VARIANCE_FLOOR, gaussian_nll  # the floor bounds every component's density

COHORT_KEYS = ("batch_size", "components")  # what the members of a cohort share
COHORT_PADDED = padded_networks.PADDED_KEYS  # what they may differ in: small nets are padded to one shape


@dataclasses.dataclass(frozen=True)
class Config(RegressionConfig):
    """The shared regression fields (`trainables.kit.regression_config`) plus K and clipping."""

    components: int = 1  # K; 1 is the thesis's DN
    max_grad_norm: float | None = None  # clip the global gradient norm to this; None: no clipping

    def __post_init__(self):
        super().__post_init__()
        if self.components < 1:
            raise SeqrepError(f"{__name__}.Config: components >= 1 must hold, but got components={self.components!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise SeqrepError(
                f"{__name__}.Config: max_grad_norm must be null or > 0, but got max_grad_norm={self.max_grad_norm!r}"
            )


cohort_group = padded_networks.cohort_group(COHORT_KEYS, Config)  # the engine's grouping into cohorts


def mixture_parameters(
    raw: torch.Tensor, components: int, n_outputs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the network's raw output (..., n, K + 2 K D), laid out as [logits | means | variance
    pre-activations], into log pi (..., n, K), mu (..., n, K, D) and sigma^2 (..., n, K, D)."""
    k, d = components, n_outputs
    logits, means, pre_variances = raw.split([k, k * d, k * d], dim=-1)
    log_pi = torch.log_softmax(logits, dim=-1)
    mu = means.reshape(*raw.shape[:-1], k, d)  # (..., n, K*D) -> (..., n, K, D)
    variance = F.softplus(pre_variances).reshape(*raw.shape[:-1], k, d) + VARIANCE_FLOOR
    return log_pi, mu, variance


def mixture_nll(y: torch.Tensor, log_pi: torch.Tensor, mu: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """-log sum_k pi_k N(y; mu_k, diag(sigma^2_k)) per point, in nats: (..., n) from y (..., n, D)."""
    log_normal = -gaussian_nll(y.unsqueeze(-2), mu, variance)  # (n, 1, D) against (..., n, K, D) -> (..., n, K)
    return -torch.logsumexp(log_pi + log_normal, dim=-1)


def mixture_moments(
    log_pi: torch.Tensor, mu: torch.Tensor, variance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sum_k pi_k mu_k and variance sum_k pi_k (sigma^2_k + (mu_k - mean)^2), each (..., n, D)."""
    pi = log_pi.exp().unsqueeze(-1)  # (..., n, K) -> (..., n, K, 1)
    mean = (pi * mu).sum(dim=-2)
    return mean, (pi * (variance + (mu - mean.unsqueeze(-2)) ** 2)).sum(dim=-2)


class MixtureDensityNetwork(nn.Module):
    """x -> (log pi(x), mu(x), sigma^2(x)) of a K-component diagonal Gaussian mixture over y.

    An `MLP` body with a linear output of width K + 2 K D (see `mixture_parameters`); with K = 1
    the thesis's density network DN (Section 2.6.3, Table 7).
    """

    def __init__(
        self, n_inputs: int, n_outputs: int, components: int, hidden_layers: int, hidden_units: int, transfer: Transfer
    ):
        super().__init__()
        self.components, self.n_outputs = components, n_outputs
        width = components * (1 + 2 * n_outputs)
        self.body = MLP(n_inputs, width, hidden_layers, hidden_units, transfer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return mixture_parameters(self.body(x), self.components, self.n_outputs)


def build(config: Config, n_inputs: int, n_outputs: int) -> MixtureDensityNetwork:
    """The network `train` trains (and each `train_cohort` member, right after its seed is set)."""
    return MixtureDensityNetwork(
        n_inputs, n_outputs, config.components, config.hidden_layers, config.hidden_units, config.transfer
    )


def title(config: Config) -> str:
    """The method's name in plot titles."""
    return "DN (mdn, K=1)" if config.components == 1 else f"MDN (K={config.components})"


def train(config: Config, session: Session) -> None:
    data = regression_fit.load(session)
    n_inputs, n_outputs = data.x_train.shape[1], data.y_train.shape[1]
    torch.manual_seed(session.context.seed)
    model = build(config, n_inputs, n_outputs)
    model.to(session.context.device)
    optimizer = rmsprop(model.parameters(), config.step_rate, config.decay, config.momentum)

    def clip() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)

    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_pi, mu, variance = model(x)
        nll = mixture_nll(y, log_pi, mu, variance)
        return nll.mean(), mixture_moments(log_pi, mu, variance)[0], nll

    regression_fit.fit_regression(
        session, data, model=model, optimizer=optimizer, batch_size=config.batch_size,
        loss=lambda x, y: mixture_nll(y, *model(x)).mean(),
        predict=lambda x: mixture_moments(*model(x)),
        nll=lambda x, y: mixture_nll(y, *model(x)), score=score,
        config=config.to_dict(), title=title(config),
        before_step=clip if config.max_grad_norm is not None else None,
        evaluation_point=optimizer.climin_point,
    )


def cohort_heads(components: int, n_outputs: int) -> Heads:
    """`train`'s loss, predictive moments and scores for a leading member axis (`Heads`)."""

    def mixture(forward: Forward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return mixture_parameters(forward(x), components, n_outputs)

    def score(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_pi, mu, variance = mixture(forward, x)
        nll = mixture_nll(y, log_pi, mu, variance)
        return nll.mean(dim=-1), mixture_moments(log_pi, mu, variance)[0], nll

    return Heads(loss=lambda raw, y: mixture_nll(y, *mixture_parameters(raw, components, n_outputs)).mean(dim=-1),
                 score=score, predict=lambda forward, x: mixture_moments(*mixture(forward, x)),
                 gradient=lambda raw, y: loss_gradients.mixture_nll(raw, y, components, VARIANCE_FLOOR))


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train same-shape trials as one stacked network (module docstring); one session per member."""
    components = configs[0].components
    train_regression_cohort(
        configs, sessions, build=build, title=title(configs[0]),
        heads=lambda tensors: cohort_heads(components, tensors["train"][1].shape[1]),
        max_grad_norms=[config.max_grad_norm for config in configs],
    )
