"""The train() skeleton every regression method of Section 2.6 shares (NN, DN/MDN, FD, IVN, FAWN).

`load` gets the data (a `uci-<name>` set: one of its splits, standardised on that split's training
rows), `fit_regression` does the rest: tensors on the device, seeded minibatch orders, the epoch
loop of `trainables.nn.training.fit`, the metrics and the Figure-6 plot. A method supplies only its
model, optimiser, minibatch loss and predictive distribution.

Metrics (Table 7's columns; Table 8's RMSE and NLL), always in the targets' ORIGINAL units: where
the data are standardised (y_std set, `seqrep.data.regression.standardise`), a prediction in
standardised units z = (y - m) / s has squared error s^2 (z - z^)^2 and density p(y) = p(z) / s, so

    mse  = mean over points and dims of s_d^2 (z_d - mean_d)^2,   rmse = sqrt(mse),
    nll  = mean over points of [ -log p(z) + sum_d log s_d ]      (nats per test point).
"""

from __future__ import annotations

import math
from typing import Callable, ContextManager

import numpy as np
import torch

import seqrep.data
from seqrep.data.base import RegressionData
from seqrep.session import Session
from trainables.nn.mlp import as_tensors, minibatches, plot_predictive, seeded_generator
from trainables.nn.training import fit

Predict = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def load(session: Session, split: int = 0, valid_fraction: float = 0.0) -> RegressionData:
    """The trial's data set as `RegressionData`; for a UCI set (all splits) the train/test split
    `split`, standardised on its training rows, with `valid_fraction` of them held out."""
    from seqrep.data.regression import UCISplits

    ctx = session.context
    data = seqrep.data.load(ctx.dataset, ctx.data_dir)
    if isinstance(data, UCISplits):
        return data.regression(split, valid_fraction)
    return data


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """-log N(y; mean, diag(variance)) per point, in nats: (n,) from (n, d); variance broadcasts."""
    return 0.5 * (torch.log(2 * math.pi * variance) + (y - mean) ** 2 / variance).sum(dim=-1)


def metrics(y: torch.Tensor, mean: torch.Tensor, nll: torch.Tensor, y_std: np.ndarray | None) -> dict[str, float]:
    """mse, rmse, nll in the original units (module docstring); `nll` (n,) in the data's units."""
    if y.shape[0] == 0:
        return {"mse": math.nan, "rmse": math.nan, "nll": math.nan}
    if y_std is None:
        scale, log_det = 1.0, 0.0
    else:
        scale = torch.as_tensor(np.asarray(y_std) ** 2, dtype=y.dtype, device=y.device)
        log_det = float(np.log(np.asarray(y_std)).sum())
    mse = float((((mean - y) ** 2) * scale).mean())
    return {"mse": mse, "rmse": math.sqrt(mse), "nll": float(nll.mean()) + log_det}


def fit_regression(
    session: Session,
    data: RegressionData,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    predict: Predict,
    nll: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    config: dict,
    title: str,
    before_step: Callable[[], None] | None = None,
    evaluation_point: Callable[[], ContextManager] | None = None,
    select_on_training: bool = False,
    patience: int | None = None,
    tolerance: float = 0.0,
) -> None:
    """Train `model` on `data` and report through `session` (the shared skeleton).

    `loss(x, y)`: the scalar minibatch objective (standardised units). `predict(x)`: predictive
    mean and variance (n, d) each. `nll(x, y)`: per-point NLL (n,), default the Gaussian NLL of
    `predict`. `before_step()` runs between backward and step (gradient clipping).
    Every evaluation reports `loss` (the objective on the whole split), `mse`, `rmse`, `nll`.
    `select_on_training`: the `valid_*` metrics are measured on the TRAINING split, i.e. model
    selection on the training loss (FAWN, Section 2.6.3: "we chose the parameter set with the
    lowest training error"); the data's own validation split is then not used.
    """
    ctx = session.context
    device = torch.device(ctx.device)
    tensors = as_tensors(data, device)
    x_train, y_train = tensors["train"]
    n_train = x_train.shape[0]
    generator = seeded_generator(ctx.seed)
    nll = nll or (lambda x, y: gaussian_nll(y, *predict(x)))

    def train_epoch() -> float:
        total = torch.zeros((), device=device)  # summed on the device: one sync per epoch, not per batch
        for x, y in minibatches(x_train, y_train, batch_size, generator):
            value = loss(x, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            total += value.detach() * x.shape[0]
        return float(total) / n_train

    def evaluate(split: str) -> dict[str, float]:
        x, y = tensors["train" if select_on_training and split == "valid" else split]
        if x.shape[0] == 0:
            return {"loss": math.nan, **metrics(y, y, y[:, 0], None)}
        mean, _ = predict(x)
        return {"loss": float(loss(x, y)), **metrics(y, mean, nll(x, y), data.y_std)}

    def on_finish() -> None:
        if x_train.shape[1] != 1 or data.y_std is not None:
            return  # the Figure-6 plot is for 1-d inputs in original units (the toy set)
        with torch.no_grad():
            value = evaluate("test")["nll"]
        plot_predictive(session.artifact_dir / "predictive.png", data, predict,
                        f"{title} on {data.name}: test NLL {value:.3f}", device)

    fit(
        session,
        model=model,
        optimizer=optimizer,
        train_epoch=train_epoch,
        evaluate=evaluate,
        config=config,
        generator=generator,
        on_finish=on_finish,
        evaluation_point=evaluation_point,
        patience=patience,
        tolerance=tolerance,
    )
