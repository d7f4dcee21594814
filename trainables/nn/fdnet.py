"""Feed-forward nets with fast dropout by variance propagation: FD and IVN (Sections 2.5, 2.6.1).

Every layer l = 1 .. L+1 maps the moments (E[h], V[h]) of its input through fast dropout on that
input (keep probability 1 - p, no rescaling) and the affine map (`variance.fd_affine`), then the
transfer function's moment rule (`variance.rectifier` / `variance.sigmoid`; the output layer is
linear, `variance.identity`). The input x enters with mean x and the constant variance
`input_variance` (IVN's "variance of the input", Section 2.6.3).

IVN (Section 2.6.1) scales the variance after every layer by a learned layer-wise
beta > beta_min: E[y'] = E[y], V[y'] = beta V[y], and y' is what the next layer sees. Here
beta = beta_min + softplus(r) with r learned (the strict > holds for every finite r), and r
starts where beta = 1, so an untrained IVN equals the FD net with the same weights. The
parameter r is called `rho` (a checkpoint key, kept); it is not the spectral radius that the
FD-RNN methods' config key `rho` sets. With no
beta (FD, `beta_min=None`) the output variance is what fast dropout propagates: FD trains only
the mean, so that variance is not fitted to anything (Table 7's huge FD NLL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.nn import variance

TRANSFER_MOMENTS = {"sigmoid": variance.sigmoid, "rectifier": variance.rectifier}


class FastDropoutNet(nn.Module):
    """x -> (E[y], V[y]) of a fast-dropout MLP, optionally with IVN's beta scaling (docstring)."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden_layers: int, hidden_units: int, transfer: str,
                 p_drop_input: float, p_drop_hidden: float, input_variance: float = 0.0,
                 beta_min: float | None = None):
        super().__init__()
        widths = [n_inputs] + [hidden_units] * hidden_layers + [n_outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.transfer = TRANSFER_MOMENTS[transfer]
        self.keeps = [1.0 - p_drop_input] + [1.0 - p_drop_hidden] * hidden_layers
        self.input_variance = input_variance
        self.beta_min = beta_min
        if beta_min is not None:
            start = max(1.0 - beta_min, 1e-3)  # beta = 1 where possible
            beta_raw = math.log(math.expm1(start))  # softplus^-1: beta_min + softplus(beta_raw) = start + beta_min
            self.rho = nn.Parameter(torch.full((len(self.layers),), beta_raw))  # r of the docstring

    def betas(self) -> torch.Tensor | None:
        return None if self.beta_min is None else self.beta_min + F.softplus(self.rho)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x
        var = torch.full_like(x, self.input_variance) if self.input_variance > 0 else None
        betas = self.betas()
        last = len(self.layers) - 1
        for i, (layer, keep) in enumerate(zip(self.layers, self.keeps)):
            mean, var = variance.fd_affine(mean, var, layer.weight, layer.bias, keep)
            mean, var = (variance.identity if i == last else self.transfer)(mean, var)
            if betas is not None:
                var = betas[i] * var
        return mean, var
