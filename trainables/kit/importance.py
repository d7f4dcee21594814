"""The importance-sampled log-likelihood of Rezende et al. (2014) that Table 13 reports, per sequence.

    log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k | x),    z_k ~ q(z | x),

computed PER SEQUENCE: the log weights log p(x, z_k) - log q(z_k | x) are each a sum over the
frames of one sequence, and the log-mean-exp over k is taken for each sequence on its own. For
K = 1 its expectation is the ELBO; it increases with K towards log p(x) (Burda et al., 2016). The
thesis authors' code instead log-sum-exp'ed the log weights summed over a whole minibatch, i.e.
log (1/K) sum_k prod_b w_kb: a bound on the product of the batch's likelihoods that is far looser
(the weights of B sequences multiply, so one sample rarely hits all of them) and drifts to the
ELBO as the batch grows. K is a user's setting, so a bad K is a `SeqrepError` (`check_samples`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from seqrep.method import SeqrepError
from trainables.nn.latent import log_mean_exp


def check_samples(samples: int, what: str = "importance sampling") -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SeqrepError(f"{what} needs K >= 1 samples, but got K={samples!r}")
    return samples


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
