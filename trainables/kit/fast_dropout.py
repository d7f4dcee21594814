"""What FD and IVN share (Sections 2.5, 2.6.1, Table 7): their configuration and predictive distribution.

Both are a fast-dropout net (`trainables.nn.fdnet.FastDropoutNet`) whose propagated output moments
give the predictive distribution N(E[y], V[y]). A floor of 1e-6 on V[y]
(`trainables.nn.gaussian.VARIANCE_FLOOR`) keeps the NLL finite where no dropout noise reaches the
output (all rates 0, and for IVN an input variance of 0).
"""

from __future__ import annotations

import dataclasses

import torch

from trainables.kit.regression_config import RegressionConfig
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.gaussian import VARIANCE_FLOOR


@dataclasses.dataclass(frozen=True)
class FastDropoutConfig(RegressionConfig):
    """`RegressionConfig` plus fast dropout's rates (FD and IVN, Sections 2.5, 2.6.1)."""

    p_drop_input: float = 0.2  # dropout rate of the inputs
    p_drop_hidden: float = 0.5  # dropout rate of every hidden layer's outputs

    def __post_init__(self):
        super().__post_init__()
        self.check([(field, f"0 <= {field} < 1", 0 <= getattr(self, field) < 1)
                    for field in ("p_drop_input", "p_drop_hidden")])


def predictive(model: FastDropoutNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[y] and the floored V[y] of the net at inputs x, (n, d) each."""
    mean, var = model(x)
    return mean, var.clamp_min(VARIANCE_FLOOR)
