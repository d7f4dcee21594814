"""What the sequence models `rnn`, `storn` and `dmm` share: data checks, tensors, config rules, optimiser.

- `sequence_data` / `load_sequences`: the trial's data set from its context, refused unless it is a
  `SequenceData` (and, for Bernoulli outputs, binary), with a message naming the suitable sets;
- `tensor_splits`: every split as a list of (T, D) tensors (`sequence_trial`: both, and the device);
- `fd_rnn_rules` and the smaller rule lists: the validation rules of the FD-RNN fields (dropout
  rates, climin optimiser, initialisation with ν, gradient renormalisation, batch size) and of the
  importance sampler's K, for `MethodConfig.check`;
- `climin_optimizer`: climin's rmsprop or Adadelta with Nesterov momentum (`trainables.nn.optim`)
  from a config's `optimizer`, `step_rate`, `decay`, `momentum` and `offset` (Section 1.3), and
  `optimizer_defaults`, the hyperparameters its `param_groups` hold (what a checkpoint's
  `optimizer` entry holds beside the state; cohorts write their members' in that layout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqrep.method import SeqrepError, SequenceData, Session
from trainables.nn.optim import Adadelta, RmsProp

Rules = list[tuple[str, str, bool]]


def sequence_data(session: Session, method: str, suitable: str) -> SequenceData:
    """The trial's data set; a `SeqrepError` naming the `suitable` sets unless it is a `SequenceData`."""
    data = session.context.data
    if not isinstance(data, SequenceData):
        raise SeqrepError(f"method {method} needs a sequence data set ({suitable}), got {session.context.dataset!r}")
    return data


def load_sequences(session: Session, likelihood: str, method: str) -> SequenceData:
    """The trial's sequence data set, checked to be binary for Bernoulli outputs (STORN, the DMM)."""
    data = sequence_data(session, method, "jsb, nottingham, piano-midi, musedata, mocap")
    if likelihood == "bernoulli":
        for split in ("train", "valid", "test"):
            for i, seq in enumerate(data.split(split)):
                if not np.isin(seq, (0.0, 1.0)).all():
                    raise SeqrepError(f"method {method}: likelihood bernoulli needs binary data, but "
                                      f"{session.context.dataset} {split}[{i}] holds other values; use "
                                      f"likelihood: gaussian")
    return data


def sequence_trial(session: Session, likelihood: str, method: str
                   ) -> tuple[SequenceData, dict[str, list[torch.Tensor]], torch.device]:
    """The checked data set (`load_sequences`), its splits as tensors and the trial's device."""
    data = load_sequences(session, likelihood, method)
    return data, tensor_splits(data), torch.device(session.context.device)


def tensor_splits(data: SequenceData) -> dict[str, list[torch.Tensor]]:
    """Every split as a list of (T, D) tensors."""
    # torch.tensor copies: arrays shipped through Ray's object store are read-only views
    return {name: [torch.tensor(s) for s in data.split(name)] for name in ("train", "valid", "test")}


def at_least_one(c: Any, *fields: str) -> Rules:
    """`field >= 1` for every named field (unit counts, sample counts)."""
    return [(field, f"{field} >= 1", getattr(c, field) >= 1) for field in fields]


def rate_rules(c: Any, *fields: str) -> Rules:
    """`0 <= field < 1` for every named field (dropout rates)."""
    return [(field, f"0 <= {field} < 1", 0 <= getattr(c, field) < 1) for field in fields]


def sampler_rules(c: Any) -> Rules:
    """K of the importance sampler on the test and on the validation split."""
    return [
        ("is_samples", "is_samples >= 1 (K of the importance sampler)", c.is_samples >= 1),
        ("valid_is_samples", "valid_is_samples >= 1", c.valid_is_samples >= 1),
    ]


def grad_norm_rule(c: Any) -> tuple[str, str, bool]:
    """nu of the gradient renormalisation (`trainables.nn.optim.renormalise_gradients`): null or > 0."""
    return ("grad_norm", "grad_norm is null or > 0", c.grad_norm is None or c.grad_norm > 0)


def nu_rule(c: Any) -> tuple[str, str, bool]:
    """Table 1's ν, the sparse initialisation (`trainables.nn.initialise.sparsify_columns`): null or >= 1."""
    return ("nu", "nu is null or an integer >= 1", c.nu is None or (isinstance(c.nu, int) and c.nu >= 1))


def fd_rnn_rules(c: Any) -> Rules:
    """The rules on the FD-RNN fields `rnn` and `storn` share (dropout rates, climin optimiser,
    initialisation (sparse, ν), gradient renormalisation, batch size), for `MethodConfig.check`."""
    return [
        *rate_rules(c, "p_drop_input", "p_drop_hidden", "p_drop_output"),
        ("step_rate", "step_rate > 0", c.step_rate > 0),
        ("momentum", "0 <= momentum < 1", 0 <= c.momentum < 1),
        ("decay", "0 <= decay < 1", 0 <= c.decay < 1),
        ("sigma2", "sigma2 > 0", c.sigma2 > 0),
        ("sigma2_in", "sigma2_in > 0", c.sigma2_in > 0),
        ("rho", "rho is null or > 0", c.rho is None or c.rho > 0),
        nu_rule(c),
        grad_norm_rule(c),
        ("batch_size", "batch_size >= 1", c.batch_size >= 1),
    ]


def climin_optimizer(config: Any, parameters) -> RmsProp | Adadelta:
    """climin's rmsprop or Adadelta (Nesterov momentum) as `config.optimizer` names it."""
    if config.optimizer == "rmsprop":
        return RmsProp(parameters, step_rate=config.step_rate, decay=config.decay, momentum=config.momentum)
    return Adadelta(parameters, step_rate=config.step_rate, decay=config.decay, momentum=config.momentum,
                    offset=config.offset)


def optimizer_defaults(config: Any) -> dict[str, Any]:
    """The hyperparameters of the trial's climin optimiser, as its `state_dict()["param_groups"]` holds them."""
    return dict(climin_optimizer(config, [torch.zeros(1)]).defaults)
