"""Diagonal Gaussians for latent-variable sequence models: KLs, densities, reparameterisation.

The math STORN (thesis Chapter 4) and the deep Markov model share:

- `kl_standard_normal`: KL(N(mu, var) || N(0, 1)) per component, the analytic KL term of the bound
  (Eq. 31 with the standard-normal prior of Section 4.3.2):
  0.5 (var + mu^2 - 1 - log var).
- `kl_normal`: KL(N(mu_q, var_q) || N(mu_p, var_p)) per component (the DMM's transition prior):
  0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1).
- `normal_log_density`: log N(x | mu, var) per component.
- `reparameterise`: z = mu + sqrt(var) eps, eps ~ N(0, 1) (Kingma and Welling, 2013; Section 4.3.2).
- `log_mean_exp`: log (1/K) sum_k exp(v_k), stably; taken per sequence it is the importance-sampled
  log-likelihood of Rezende et al. (2014) (`trainables.kit.importance`, which says why per
  sequence). `nll_per_frame` sums per-sequence estimates over a split and divides by its number
  of frames (Table 13's convention).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def kl_standard_normal(mean: Tensor, var: Tensor) -> Tensor:
    """KL(N(mean, var) || N(0, 1)) for every component (same shape as mean)."""
    return 0.5 * (var + mean.square() - 1.0 - torch.log(var))


def kl_normal(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) for every component."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p).square()) / var_p - 1.0)


def normal_log_density(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x | mean, var) for every component."""
    return -0.5 * (LOG_2PI + torch.log(var) + (x - mean).square() / var)


def reparameterise(mean: Tensor, var: Tensor, samples: int | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """z = mean + sqrt(var) * eps with eps ~ N(0, 1); `samples` K prepends a sample dimension."""
    shape = mean.shape if samples is None else (samples,) + tuple(mean.shape)
    eps = torch.randn(shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + var.sqrt() * eps


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log (1/K) sum_k exp(values_k) along `dim`, computed stably."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def nll_per_frame(log_likelihoods: Tensor, frames: int) -> float:
    """-sum over sequences of log p(x_b), divided by the number of frames of those sequences."""
    if frames < 1:
        raise ValueError(f"nll_per_frame needs at least one frame, got {frames}")
    return -float(log_likelihoods.sum()) / frames
