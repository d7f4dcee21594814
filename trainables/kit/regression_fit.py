"""The train() skeleton every regression method of Section 2.6 shares (NN, DN/MDN, FD, IVN, FAWN).

`load` gets the data from the trial's context (a `uci-<name>` set: one of its splits,
standardised on that split's training rows), `fit_regression` does the rest: tensors on the
device, seeded minibatch orders, the epoch loop of `trainables.kit.training.fit`, the metrics and
the Figure-6 plot. A method supplies only its model, optimiser, minibatch loss and predictive
distribution.

Metrics (Table 7's columns; Table 8's RMSE and NLL), always in the targets' ORIGINAL units: where
the data are standardised (y_std set, `seqrep.data.base.standardise`), a prediction in
standardised units z = (y - m) / s has squared error s^2 (z - z^)^2 and density p(y) = p(z) / s, so

    mse  = mean over points and dims of s_d^2 (z_d - mean_d)^2,   rmse = sqrt(mse),
    nll  = mean over points of [ -log p(z) + sum_d log s_d ]      (nats per test point).
"""

from __future__ import annotations

import math
from typing import Callable, ContextManager

import numpy as np
import torch

from seqrep.method import RegressionData, Session, UCISplits
from trainables.kit.predictive_plot import plot_predictive
from trainables.kit.training import fit
from trainables.nn.feedforward import minibatches, seeded_generator
from trainables.nn.gaussian import gaussian_nll

Predict = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Tensors = dict[str, tuple[torch.Tensor, torch.Tensor]]
Score = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

__all__ = ["as_tensors", "fit_regression", "gaussian_nll", "load", "metrics"]


def load(session: Session, split: int = 0, valid_fraction: float = 0.0) -> RegressionData:
    """The trial's data set as `RegressionData`; for a UCI set (all splits) the train/test split
    `split`, standardised on its training rows, with `valid_fraction` of them held out."""
    data = session.context.data
    if isinstance(data, UCISplits):
        return data.regression(split, valid_fraction)
    return data


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


def as_tensors(data: RegressionData, device: torch.device | str) -> Tensors:
    """Every split as float32 tensors on `device`, moved once: the data sets of Section 2.6.3 are
    small enough that copying per batch would cost more than the arithmetic."""
    out = {}
    for split in ("train", "valid", "test"):
        x, y = data.split(split)
        # torch.tensor copies: arrays shipped through Ray's object store are read-only views
        out[split] = (
            torch.tensor(np.asarray(x, dtype=np.float32), device=device),
            torch.tensor(np.asarray(y, dtype=np.float32), device=device),
        )
    return out


def make_train_epoch(tensors: Tensors, optimizer: torch.optim.Optimizer, batch_size: int,
                     loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], generator: torch.Generator,
                     before_step: Callable[[], None] | None) -> Callable[[], float]:
    """One pass over the training split in seeded minibatches; returns the mean minibatch loss."""
    x_train, y_train = tensors["train"]
    n_train = x_train.shape[0]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step = getattr(optimizer, "lean_step", optimizer.step)  # climin's optimisers skip torch.optim's wrapper

    def train_epoch() -> float:
        total = torch.zeros((), device=x_train.device)  # summed on the device: one sync per epoch, not per batch
        for x, y in minibatches(x_train, y_train, batch_size, generator):
            value = loss(x, y)
            for p in params:  # `optimizer.zero_grad(set_to_none=True)` without its profiler and dynamo wrappers
                p.grad = None
            value.backward()
            if before_step is not None:
                before_step()
            step()
            total += value.detach() * x.shape[0]
        return float(total) / n_train

    return train_epoch


def make_evaluate(tensors: Tensors, data: RegressionData, score: Score,
                  select_on_training: bool) -> Callable[[str], dict[str, float]]:
    """`evaluate(split)`: `loss` on the whole split, `mse`, `rmse`, `nll` (see `fit_regression`)."""

    def evaluate(split: str) -> dict[str, float]:
        x, y = tensors["train" if select_on_training and split == "valid" else split]
        if x.shape[0] == 0:
            return {"loss": math.nan, **metrics(y, y, y[:, 0], None)}
        value, mean, nll = score(x, y)
        return {"loss": float(value), **metrics(y, mean, nll, data.y_std)}

    return evaluate


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
    score: Score | None = None,
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
    `predict`. `score(x, y)`: (loss, predictive mean, per-point NLL) of a whole split from one
    forward pass, the same numbers as the three calls it replaces (which are the default).
    `before_step()` runs between backward and step (gradient clipping).
    Every evaluation reports `loss` (the objective on the whole split), `mse`, `rmse`, `nll`.
    `select_on_training`: the `valid_*` metrics are measured on the TRAINING split, i.e. model
    selection on the training loss (FAWN, Section 2.6.3: "we chose the parameter set with the
    lowest training error"); the data's own validation split is then not used.
    """
    ctx = session.context
    device = torch.device(ctx.device)
    tensors = as_tensors(data, device)
    generator = seeded_generator(ctx.seed)
    nll = nll or (lambda x, y: gaussian_nll(y, *predict(x)))
    score = score or (lambda x, y: (loss(x, y), predict(x)[0], nll(x, y)))
    train_epoch = make_train_epoch(tensors, optimizer, batch_size, loss, generator, before_step)
    evaluate = make_evaluate(tensors, data, score, select_on_training)

    def on_finish() -> None:
        if tensors["train"][0].shape[1] != 1 or data.y_std is not None:
            return  # the Figure-6 plot is for 1-d inputs in original units (the toy set)
        with torch.no_grad():
            value = evaluate("test")["nll"]
        plot_predictive(session.artifact_dir / "predictive.png", data, predict,
                        f"{title} on {data.name}: test NLL {value:.3f}", device)

    fit(session, model=model, optimizer=optimizer, train_epoch=train_epoch, evaluate=evaluate, config=config,
        generator=generator, on_finish=on_finish, evaluation_point=evaluation_point, patience=patience,
        tolerance=tolerance)
