"""The recurrent network of sequence reduction (thesis Chapter 3, Eq. 27): one layer, optional outputs.

Hidden states h_t = sigma(W_in x_t + W_rec h_t-1 + b_h) (or LSTM cells, `torch.nn.LSTM`), outputs
y_t = sigma_out(W_out h_t + b_out); pooling them over time (`trainables.nn.pooling`) gives the
embedding. The output transfer sigma_out is the hidden one ("post-synaptic output", Figure 7), the
identity for LSTM and for CE's logits. Transfers (Sections 3.4.3.1, 3.5.2): tanh, softsign,
rectifier, softplus, sigmoid. Initialisation (Sections 1.3.3, 3.5.1.1): every weight
~ N(0, init_std^2), biases 0, and W_rec rescaled to a spectral radius (not for LSTM). `l2` is the
penalty of Section 3.5.1.3 on all weights but the output bias.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainables.nn.recurrent import set_spectral_radius

Transfer = Literal["tanh", "softsign", "rectifier", "softplus", "sigmoid", "lstm"]
TRANSFERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "softsign": F.softsign, "rectifier": F.relu, "softplus": F.softplus,
    "sigmoid": torch.sigmoid, "identity": lambda a: a,
}


class PooledRNN(nn.Module):
    """One recurrent layer and an optional output layer; `hidden`, `outputs` and `embed` (docstring)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int | None, transfer: str, out_transfer: str | None = None):
        super().__init__()
        if transfer not in TRANSFERS and transfer != "lstm":
            raise ValueError(f"transfer must be one of {', '.join([*TRANSFERS, 'lstm'])}, got {transfer!r}")
        self.transfer = transfer
        self.out_transfer = out_transfer or ("identity" if transfer == "lstm" else transfer)
        if transfer == "lstm":
            self.lstm = nn.LSTM(n_in, n_hidden)
        else:
            self.w_in = nn.Linear(n_in, n_hidden)
            self.w_rec = nn.Parameter(torch.zeros(n_hidden, n_hidden))
        self.out = nn.Linear(n_hidden, n_out) if n_out else None

    def initialise(self, std: float, spectral_radius: float | None, generator: torch.Generator) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "bias" in name:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)
            if self.transfer != "lstm" and spectral_radius is not None:
                set_spectral_radius(self.w_rec, spectral_radius)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h_1:T (T, B, H) for inputs x (T, B, D), h_0 = 0."""
        if self.transfer == "lstm":
            return self.lstm(x)[0]
        f = TRANSFERS[self.transfer]
        pre = self.w_in(x)  # all input projections at once
        h = torch.zeros(x.shape[1], self.w_rec.shape[0], dtype=x.dtype, device=x.device)
        out = []
        for pre_t in pre.unbind(0):  # not pre[t]: each index's backward allocates a (T, B, H) zero tensor
            h = f(pre_t + h @ self.w_rec.T)
            out.append(h)
        return torch.stack(out)

    def outputs(self, h: torch.Tensor) -> torch.Tensor:
        return TRANSFERS[self.out_transfer](self.out(h))

    def penalised(self) -> list[torch.Tensor]:
        """The parameters the L2 penalty covers: all but the output bias (Section 3.5.1.3)."""
        return [p for name, p in self.named_parameters() if name != "out.bias"]


def l2(model: PooledRNN) -> torch.Tensor:
    return sum((p ** 2).sum() for p in model.penalised())
