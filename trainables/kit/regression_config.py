"""The configuration fields and rules the MLP-based regression methods share (Section 2.6.3).

NN (`trainables.mlp`), DN/MDN (`trainables.mdn`), FD (`trainables.fd`) and IVN (`trainables.ivn`)
search the same network body and rmsprop parameters (Section 2.6.3: "the number of hidden layers
(either 1, 2 or 3), the transfer function (sigmoid or rectifier)", step rate, decay, momentum)
and minibatch size. Each method's `Config` extends `RegressionConfig` (FD and IVN through
`trainables.kit.fast_dropout.FastDropoutConfig`, which adds the dropout rates).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from seqrep.method import MethodConfig
from trainables.nn.feedforward import TRANSFERS


def body_rules(config: Any) -> list[tuple[str, str, bool]]:
    """The rules on the fields every MLP-based method's Config shares, for `MethodConfig.check`."""
    return [
        ("hidden_layers", "hidden_layers >= 1", config.hidden_layers >= 1),
        ("hidden_units", "hidden_units >= 1", config.hidden_units >= 1),
        ("transfer", "transfer in ('sigmoid', 'rectifier')", config.transfer in TRANSFERS),
        ("step_rate", "step_rate > 0", config.step_rate > 0),
        ("decay", "0 <= decay < 1", 0 <= config.decay < 1),
        ("momentum", "0 <= momentum < 1", 0 <= config.momentum < 1),
        ("batch_size", "batch_size >= 1", config.batch_size >= 1),
    ]


@dataclasses.dataclass(frozen=True)
class RegressionConfig(MethodConfig):
    """The network body, rmsprop (climin's, Nesterov momentum) and the minibatch size."""

    hidden_layers: int = 1  # the thesis searches 1, 2 or 3
    hidden_units: int = 50  # toy: 10, 25, 50 or 100 (Section 2.6.3.1)
    transfer: Literal["sigmoid", "rectifier"] = "rectifier"
    step_rate: float = 1e-3  # rmsprop's step rate
    decay: float = 0.9  # rmsprop's decay of the squared-gradient average
    momentum: float = 0.0
    batch_size: int = 10  # toy: 10, 25 or 50; the smallest sees 5 updates per epoch of 50 points

    def __post_init__(self):
        self.check(body_rules(self))
