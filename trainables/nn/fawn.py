"""Fast adaptive weight noise (FAWN), Section 2.6.2: Gaussian weights propagated in closed form.

Every weight and bias theta_i has q(theta_i) = N(mu_i, s_i^2) with learned mu_i and
s_i = softplus(r_i). A layer maps input moments with `variance.gaussian_affine` (Eqs. 24, 25,
plus the bias's variance) and then the transfer's moment rule (Section 2.3.3); the output layer
is linear. The network's output is then y ~ N(E[y], V[y]) (Eq. 26).

Likelihood (Section 2.6.2.3): z = y + eps, eps ~ N(0, sigma_hat_d^2) per output dimension d,
sigma_hat_d = softplus(learned), so the predictive distribution is N(E[y], V[y] + sigma_hat^2).

Reference distribution / prior (2.6.2.3): p(theta) = prod_i N(theta_i | mu~, sigma~^2), one global
univariate Gaussian whose mu~ and sigma~ = softplus(learned) are trained like every other
parameter (Hinton and Van Camp's learned prior), and the closed-form

    KL[q || p] = sum_i log(sigma~ / s_i) + (s_i^2 + (mu_i - mu~)^2) / (2 sigma~^2) - 1/2.

The KL covers the weights and biases of every layer; sigma_hat is a point estimate.

Objectives per training set of N points (divided by N here, so that a minibatch mean of the
per-point term plus KL / N estimates the whole objective / N without bias):
- FAWN-VB (2.6.2.1): -E_q[log N(z | y, sigma_hat^2)] + KL, with the closed form
  E[log N(z | y, s2)] = -V[y] / (2 s2) - (z - E[y])^2 / (2 s2) - log sqrt(2 pi s2).
- FAWN-ROPD (2.6.2.2): -log N(z | E[y], V[y] + sigma_hat^2) + KL.

Choices the thesis leaves open: the initial weight standard deviation s_i (`init_noise`, 0.2 by
default, the prior's initial sigma~, so that the KL's log-ratio term starts at 0), sigma_hat
(starts at 1, i.e. the targets' std where they are standardised) and the prior's start (mu~ = 0,
sigma~ = `init_std`). The weight means start from N(0, init_std^2) (Section 2.6.4: standard
deviation 0.2), biases at 0. Why not a near-deterministic start (s_i = 1e-3): the KL then starts
at ~log(0.2 / 0.001) = 5.3 nats per weight, on Boston (~750 weights, 455 points) ~9 nats per
training point, and Adam's first hundreds of epochs pull every weight onto the prior: both
variants collapsed to the constant predictor (test RMSE 7.9 = the targets' std, training loss
0.5 log(2 pi e)) on the first two splits, while s_i = 0.05 or 0.2 reached RMSE ~2.6 in 400 epochs.

Observed on the toy set (50 points, 301 parameters, 5000 full-batch epochs): BOTH variants end as
a straight line with a constant variance (test NLL ~1.61), the behaviour the thesis reports for
FAWN-VB only; the KL, summed over all weights and biases and divided by N = 50, outweighs the
data term. The thesis's FAWN-ROPD (toy NLL 1.15) is not reproduced.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.nn import variance
from trainables.nn.gaussian import gaussian_nll

TRANSFER_MOMENTS = {"sigmoid": variance.sigmoid, "rectifier": variance.rectifier}


def inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor, prior_mean: torch.Tensor, prior_std: torch.Tensor) -> torch.Tensor:
    """sum_i KL[N(mean_i, std_i^2) || N(prior_mean, prior_std^2)] (Section 2.6.2.3)."""
    return (torch.log(prior_std / std) + (std**2 + (mean - prior_mean) ** 2) / (2 * prior_std**2) - 0.5).sum()


def expected_gaussian_log_likelihood(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                                     noise_var: torch.Tensor) -> torch.Tensor:
    """E_{y ~ N(mean, var)}[log N(z | y, noise_var)] per point, summed over dims: (n,) (2.6.2.1)."""
    return (-var / (2 * noise_var) - (z - mean) ** 2 / (2 * noise_var)
            - 0.5 * torch.log(2 * math.pi * noise_var)).sum(dim=-1)


class GaussianLinear(nn.Module):
    """An affine layer whose weights and bias are independent Gaussians (means and softplus stds)."""

    def __init__(self, n_in: int, n_out: int, init_std: float, init_noise: float):
        super().__init__()
        self.weight_mean = nn.Parameter(torch.randn(n_out, n_in) * init_std)
        self.bias_mean = nn.Parameter(torch.zeros(n_out))
        raw = inverse_softplus(init_noise)
        self.weight_raw_std = nn.Parameter(torch.full((n_out, n_in), raw))
        self.bias_raw_std = nn.Parameter(torch.full((n_out,), raw))

    def stds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(self.weight_raw_std), F.softplus(self.bias_raw_std)

    def forward(self, mean: torch.Tensor, var: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        w_std, b_std = self.stds()
        return variance.gaussian_affine(mean, var, self.weight_mean, w_std**2, self.bias_mean, b_std**2)


class FAWNNet(nn.Module):
    """x -> moments of y, plus the learned noise sigma_hat and the KL to the learned prior."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden_layers: int, hidden_units: int, transfer: str,
                 init_std: float = 0.2, init_noise: float = 1e-3):
        super().__init__()
        widths = [n_inputs] + [hidden_units] * hidden_layers + [n_outputs]
        self.layers = nn.ModuleList(GaussianLinear(a, b, init_std, init_noise) for a, b in zip(widths[:-1], widths[1:]))
        self.transfer = TRANSFER_MOMENTS[transfer]
        self.raw_noise = nn.Parameter(torch.full((n_outputs,), inverse_softplus(1.0)))
        self.prior_mean = nn.Parameter(torch.zeros(()))
        self.prior_raw_std = nn.Parameter(torch.tensor(inverse_softplus(init_std)))

    def noise_var(self) -> torch.Tensor:
        return F.softplus(self.raw_noise) ** 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = x, None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            mean, var = layer(mean, var)
            if i != last:
                mean, var = self.transfer(mean, var)
        return mean, var

    def predictive(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N(E[y], V[y] + sigma_hat^2): Eq. (26) convolved with the likelihood's noise."""
        mean, var = self(x)
        return mean, var + self.noise_var()

    def kl(self) -> torch.Tensor:
        prior_std = F.softplus(self.prior_raw_std)
        total = torch.zeros((), dtype=self.prior_mean.dtype, device=self.prior_mean.device)
        for layer in self.layers:
            w_std, b_std = layer.stds()
            total = total + gaussian_kl(layer.weight_mean, w_std, self.prior_mean, prior_std)
            total = total + gaussian_kl(layer.bias_mean, b_std, self.prior_mean, prior_std)
        return total


def vb_point_loss(model: FAWNNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FAWN-VB's per-point term -E_q[log N(z | y, sigma_hat^2)], (n,)."""
    mean, var = model(x)
    return -expected_gaussian_log_likelihood(y, mean, var, model.noise_var())


def ropd_point_loss(model: FAWNNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FAWN-ROPD's per-point term -log N(z | E[y], V[y] + sigma_hat^2), (n,)."""
    return gaussian_nll(y, *model.predictive(x))
