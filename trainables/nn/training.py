"""The epoch loop every method shares: train, evaluate, keep the best, resume, finish.

One straight sequence per epoch (nanoGPT's habit): train one pass, evaluate on the validation
split, remember the best state by the space's selection metric, report with the state to resume
from. A non-finite training loss or selection metric ends the trial as `diverged`. At the end the
best state is reloaded and the test split is measured there, so `test_*` always belongs to the
best validation epoch (`best_epoch`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Mapping

import torch

from seqrep.session import Session, is_finite


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def prefixed(split: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{split}_{name}": float(value) for name, value in metrics.items()}


def fit(
    session: Session,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_epoch: Callable[[], float],
    evaluate: Callable[[str], Mapping[str, float]],
    config: Mapping[str, Any],
    generator: torch.Generator | None = None,
    on_finish: Callable[[], None] | None = None,
    evaluation_point: Callable[[], ContextManager] | None = None,
    patience: int | None = None,
    tolerance: float = 0.0,
) -> None:
    """Run `train_epoch` until the epoch budget, reporting `evaluate("valid")` after each epoch.

    `train_epoch()` returns the mean training loss of one pass; `evaluate(split)` returns the
    split's metrics without prefix (`{"nll": ..., "mse": ...}`). `generator` is the torch RNG the
    method draws minibatch orders from; its state travels with the checkpoint so that a resumed
    trial continues the same sequence. `on_finish()` runs with the best state loaded (plots).
    `evaluation_point()` is a context in which the parameters are where validation should look
    and the best state is copied (climin's Nesterov optimisers keep a look-ahead point otherwise).
    `patience`: stop early (status still `completed`) once the selection metric has gone
    `patience` epochs without improving by more than `tolerance` times its magnitude on the value
    that last did so ("until convergence", Section 2.6.3); None runs the whole budget.
    """
    at_eval = evaluation_point or contextlib.nullcontext
    ctx = session.context
    start, best, best_epoch, best_state, best_valid = 1, None, 0, None, {}
    plateau_value, plateau_epoch = None, 0  # the last value that improved by more than `tolerance`
    state = session.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if generator is not None:
            generator.set_state(state["generator"])
        start = int(state["epoch"]) + 1
        best = state["best"] if state["best_epoch"] else None
        best_epoch, best_state, best_valid = int(state["best_epoch"]), state["best_state"], state["best_valid"]
        if "plateau_epoch" in state:
            plateau_epoch = int(state["plateau_epoch"])
            plateau_value = None if math.isnan(state["plateau_value"]) else state["plateau_value"]

    status = "completed"
    for epoch in range(start, ctx.max_epochs + 1):
        model.train()
        train_loss = float(train_epoch())
        model.eval()
        with torch.no_grad(), at_eval():
            valid = prefixed("valid", evaluate("valid"))
            improved = is_finite(valid.get(ctx.metric)) and ctx.better(valid[ctx.metric], best)
            candidate = clone_state(model) if improved else None
        if ctx.metric not in valid:
            raise KeyError(f"selection metric {ctx.metric!r} not among the validation metrics {sorted(valid)}")
        score = valid[ctx.metric]
        if not (is_finite(train_loss) and is_finite(score)):
            session.report({"epoch": epoch, "train_loss": train_loss, **valid})
            status = "diverged"
            break
        if improved:
            best, best_epoch, best_state, best_valid = score, epoch, candidate, valid
        margin = tolerance * abs(plateau_value) if plateau_value is not None else 0.0
        if plateau_value is None or ctx.better(score, plateau_value - margin if ctx.mode == "min" else plateau_value + margin):
            plateau_value, plateau_epoch = score, epoch
        session.report(
            {"epoch": epoch, "train_loss": train_loss, **valid},
            checkpoint={
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state() if generator is not None else torch.empty(0),
                "best": best if best is not None else math.nan,
                "best_epoch": best_epoch,
                "best_state": best_state if best_state is not None else {},
                "best_valid": best_valid,
                "plateau_value": plateau_value if plateau_value is not None else math.nan,
                "plateau_epoch": plateau_epoch,
            },
        )
        if patience is not None and epoch - plateau_epoch >= patience:
            break

    final: dict[str, float] = {"best_epoch": best_epoch}
    if best_state is not None:
        model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            final.update(best_valid)
            final.update(prefixed("test", evaluate("test")))
        if on_finish is not None:
            on_finish()
    model_file = {"model": best_state, "config": dict(config)} if best_state is not None else None
    session.finish(final, model_file, status)
