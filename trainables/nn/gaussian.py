"""The diagonal Gaussian negative log-likelihood and the one variance floor every method adds.

`gaussian_nll` is the per-point NLL of the regression methods of Section 2.6 (NN, DN/MDN, FD,
IVN, FAWN) and of their metrics. `VARIANCE_FLOOR` (1e-6) is added to, or clamps, every learned or
propagated variance (MDN's components, FD's and IVN's output variance, STORN's and the DMM's
Gaussians): it keeps a density bounded however well it fits one point, and log-variances finite
where no noise reaches an output.
"""

from __future__ import annotations

import math

import torch

VARIANCE_FLOOR = 1e-6


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """-log N(y; mean, diag(variance)) per point, in nats: (n,) from (n, d); variance broadcasts."""
    return 0.5 * (torch.log(2 * math.pi * variance) + (y - mean) ** 2 / variance).sum(dim=-1)
