"""Diagonal Gaussians for latent-variable sequence models, and the importance-sampled likelihood.

The math STORN (thesis Chapter 4) and the deep Markov model share:

- `kl_standard_normal`: KL(N(mu, var) || N(0, 1)) per component, the analytic KL term of the bound
  (Eq. 31 with the standard-normal prior of Section 4.3.2):
  0.5 (var + mu^2 - 1 - log var).
- `kl_normal`: KL(N(mu_q, var_q) || N(mu_p, var_p)) per component (the DMM's transition prior):
  0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1).
- `normal_log_density`: log N(x | mu, var) per component.
- `reparameterise`: z = mu + sqrt(var) eps, eps ~ N(0, 1) (Kingma and Welling, 2013; Section 4.3.2).
- `importance_log_likelihood`: the estimator of Rezende et al. (2014) that Table 13 reports,

      log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k | x),    z_k ~ q(z | x),

  computed PER SEQUENCE: the log weights log p(x, z_k) - log q(z_k | x) are each a sum over the
  frames of one sequence, and the log-mean-exp over k is taken for each sequence on its own.
  For K = 1 its expectation is the ELBO; it increases with K towards log p(x) (Burda et al.,
  2016). The thesis authors' code instead log-sum-exp'ed the log weights summed over a whole
  minibatch, i.e. log (1/K) sum_k prod_b w_kb: a bound on the product of the batch's likelihoods
  that is far looser (the weights of B sequences multiply, so one sample rarely hits all of
  them) and drifts to the ELBO as the batch grows. `nll_per_frame` sums the per-sequence
  estimates over a split and divides by its number of frames (Table 13's convention).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from seqrep.errors import SeqrepError

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


def check_samples(samples: int, what: str = "importance sampling") -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SeqrepError(f"{what} needs K >= 1 samples, but got K={samples!r}")
    return samples


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log (1/K) sum_k exp(values_k) along `dim`, computed stably."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def importance_log_likelihood(log_weights: Callable[[int], Tensor], samples: int, chunk: int | None = None) -> Tensor:
    """Per-sequence importance-sampled log p(x): (B,) from K = `samples` draws.

    `log_weights(n)` draws n samples z ~ q(z | x) for every sequence of a batch and returns their
    log weights log p(x, z) - log q(z | x), each summed over that sequence's frames: (n, B). It is
    called in chunks of at most `chunk` samples (memory), and the log-mean-exp over all K is taken
    per sequence (column), never over the batch.
    """
    check_samples(samples)
    chunk = samples if chunk is None else max(1, min(chunk, samples))
    parts, drawn = [], 0
    while drawn < samples:
        n = min(chunk, samples - drawn)
        part = log_weights(n)
        if part.dim() != 2 or part.shape[0] != n:
            raise ValueError(f"log_weights({n}) must return (n, B) = ({n}, B), got {tuple(part.shape)}")
        parts.append(part)
        drawn += n
    return log_mean_exp(torch.cat(parts, 0), dim=0)  # (K, B) -> (B,)


def nll_per_frame(log_likelihoods: Tensor, frames: int) -> float:
    """-sum over sequences of log p(x_b), divided by the number of frames of those sequences."""
    if frames < 1:
        raise ValueError(f"nll_per_frame needs at least one frame, got {frames}")
    return -float(log_likelihoods.sum()) / frames
