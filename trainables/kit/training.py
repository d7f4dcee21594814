"""The epoch loop every method shares: train, evaluate, keep the best, resume, finish.

One straight sequence per epoch (nanoGPT's habit): train one pass, evaluate on the validation
split, remember the best state by the space's selection metric, report with the state to resume
from. A non-finite training loss or selection metric ends the trial as `diverged`. At the end the
best state is reloaded and the test split is measured there, so `test_*` always belongs to the
best validation epoch (`best_epoch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, ContextManager, Mapping

import torch

from seqrep.method import Session, is_finite


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def prefixed(split: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{split}_{name}": float(value) for name, value in metrics.items()}


@dataclasses.dataclass
class Progress:
    """What the loop carries from epoch to epoch (and through a checkpoint)."""

    start: int = 1
    best: float | None = None
    best_epoch: int = 0
    best_state: dict | None = None
    best_valid: dict = dataclasses.field(default_factory=dict)
    plateau_value: float | None = None  # the last value that improved by more than `tolerance`
    plateau_epoch: int = 0

    @classmethod
    def restore(cls, state: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator | None) -> "Progress":
        """Load model, optimiser and generator from a checkpoint and return the loop's progress."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if generator is not None:
            generator.set_state(state["generator"])
        progress = cls(start=int(state["epoch"]) + 1, best=state["best"] if state["best_epoch"] else None,
                       best_epoch=int(state["best_epoch"]), best_state=state["best_state"],
                       best_valid=state["best_valid"])
        if "plateau_epoch" in state:
            progress.plateau_epoch = int(state["plateau_epoch"])
            progress.plateau_value = None if math.isnan(state["plateau_value"]) else state["plateau_value"]
        return progress

    def checkpoint(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator | None) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state() if generator is not None else torch.empty(0),
            "best": self.best if self.best is not None else math.nan,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state if self.best_state is not None else {},
            "best_valid": self.best_valid,
            "plateau_value": self.plateau_value if self.plateau_value is not None else math.nan,
            "plateau_epoch": self.plateau_epoch,
        }

    def track_plateau(self, score: float, epoch: int, ctx, tolerance: float) -> None:
        """Move the plateau mark when `score` beats its value by more than `tolerance` (relative)."""
        margin = tolerance * abs(self.plateau_value) if self.plateau_value is not None else 0.0
        if self.plateau_value is None or ctx.better(
                score, self.plateau_value - margin if ctx.mode == "min" else self.plateau_value + margin):
            self.plateau_value, self.plateau_epoch = score, epoch


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
    state = session.restore()
    progress = Progress() if state is None else Progress.restore(state, model, optimizer, generator)
    status = "completed"
    for epoch in range(progress.start, ctx.max_epochs + 1):
        model.train()
        train_loss = float(train_epoch())
        model.eval()
        with torch.no_grad(), at_eval():
            valid = prefixed("valid", evaluate("valid"))
            improved = is_finite(valid.get(ctx.metric)) and ctx.better(valid[ctx.metric], progress.best)
            candidate = clone_state(model) if improved else None
        if ctx.metric not in valid:
            raise KeyError(f"selection metric {ctx.metric!r} not among the validation metrics {sorted(valid)}")
        score = valid[ctx.metric]
        if not (is_finite(train_loss) and is_finite(score)):
            session.report({"epoch": epoch, "train_loss": train_loss, **valid})
            status = "diverged"
            break
        if improved:
            progress.best, progress.best_epoch = score, epoch
            progress.best_state, progress.best_valid = candidate, valid
        progress.track_plateau(score, epoch, ctx, tolerance)
        session.report({"epoch": epoch, "train_loss": train_loss, **valid},
                       checkpoint=progress.checkpoint(epoch, model, optimizer, generator))
        if patience is not None and epoch - progress.plateau_epoch >= patience:
            break
    finish(session, progress, model, evaluate, config, status, on_finish)


def finish(session: Session, progress: Progress, model: torch.nn.Module, evaluate: Callable[[str], Mapping[str, float]],
           config: Mapping[str, Any], status: str, on_finish: Callable[[], None] | None) -> None:
    """Reload the best state, measure the test split there, run `on_finish`, and finish the trial."""
    final: dict[str, float] = {"best_epoch": progress.best_epoch}
    best_state = progress.best_state
    if best_state is not None:
        model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            final.update(progress.best_valid)
            final.update(prefixed("test", evaluate("test")))
        if on_finish is not None:
            on_finish()
    model_file = {"model": best_state, "config": dict(config)} if best_state is not None else None
    session.finish(final, model_file, status)
