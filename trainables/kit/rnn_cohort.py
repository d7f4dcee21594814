"""Cohorts of the `rnn` method: K trials trained together, each member reported as its solo run.

`train_cohort(configs, sessions)` is `trainables.rnn.train_cohort` (the cohort contract of
`seqrep.method`). The members must agree on `COHORT_KEYS`:

- `cell`: which recurrence runs (tanh members are stacked, LSTM members are not: below);
- `hidden_units`: the shape of every weight;
- `batch_size`: the minibatch layout (every member takes as many optimiser steps per epoch, so the
  members step together);
- `optimizer`: the optimiser's state layout (rmsprop's one average, Adadelta's two).

Everything else (dropout rates, `fd_final_layer`, initialisation σ², ρ, ν, b_h, b_y, step rate,
decay, momentum, offset, gradient renormalisation) may differ per member, and so may the seed.
The members' contexts share data set, epoch budget, selection metric and device.

Tanh members (sRNN and FD-RNN, Tables 1, 3 and 4) are one stacked model (`trainables.kit.rnn_stack.
Stacked`). LSTM members (`lstm`, `torch-lstm`) run in lockstep: each member's solo net trains its
epoch in turn (`Lockstep`), with no speed-up, so that the cohort still reports, checkpoints and
resumes as one.

The epoch loop is `trainables.kit.training.fit`'s, per member: train, validate at climin's resting
point, keep the best state, `report(metrics, checkpoint)` with the checkpoint a solo run writes
(`Progress.checkpoint`: the member's net and climin optimiser state dicts, its minibatch generator,
its best state and plateau), and at the end `finish` with the test metrics at the best state. A
member whose training loss or selection metric is not finite reports that epoch without a
checkpoint, is finished `diverged` at once (test metrics at its best state, if any) and leaves the
stack while the others go on. On a restart every member's `restore()` must return a checkpoint of
one epoch (or all none); a member's checkpoint is a solo run's, so a solo run could resume it too.

Numbers: a tanh member's run is its solo run's up to float rounding. On one CPU thread (MKL) the
FD members of tests/test_cohort_rnn.py match their solo runs bit for bit over 20 epochs (the stacked
products and the per-member operations are the solo ones); a deterministic member (every rate 0),
whose solo run is torch's `nn.RNN`, runs here the FD rules with keep = 1 and matches to ~2e-7.
Other kernels (a GPU's batched products, several threads) round differently, and such differences
grow over training as between any two runs of one net.
"""

from __future__ import annotations

import torch

from seqrep.method import SeqrepError, Session, is_finite
from trainables.kit.rnn_stack import Lockstep, Stacked
from trainables.kit.sequence_models import sequence_data, tensor_splits
from trainables.kit.training import Progress, prefixed

COHORT_KEYS = ("cell", "hidden_units", "batch_size", "optimizer")
SHARED_CONTEXT = ("dataset", "max_epochs", "metric", "mode", "device")
SUITABLE = "jsb, nottingham, piano-midi, musedata"


def check_cohort(configs: list, sessions: list[Session]) -> None:
    """One session per config; members agree on `COHORT_KEYS` and on the shared context keys."""
    if not configs or len(configs) != len(sessions):
        raise SeqrepError(f"an rnn cohort needs one session per config and at least one member, but got "
                          f"{len(configs)} configs and {len(sessions)} sessions")
    for what, keys, items in (("config", COHORT_KEYS, configs), ("context", SHARED_CONTEXT,
                                                                 [s.context for s in sessions])):
        for key in keys:
            values = [getattr(item, key) for item in items]
            if any(value != values[0] for value in values):
                raise SeqrepError(f"rnn cohort members must share {what} key {key!r}, but got {values}")


def restore(sessions: list[Session], stack) -> list[Progress]:
    """Each member's progress: fresh, or loaded (net, optimiser, generator) from its checkpoint."""
    states = [session.restore() for session in sessions]
    if all(state is None for state in states):
        return [Progress() for _ in sessions]
    missing = [k for k, state in enumerate(states) if state is None]
    epochs = sorted({int(state["epoch"]) for state in states if state is not None})
    if missing or len(epochs) > 1:
        raise SeqrepError(f"an rnn cohort resumes all its members from one epoch, but members {missing} have no "
                          f"checkpoint and the others are at epochs {epochs}")
    return [Progress.restore(state, stack.model(k), stack.optimizer(k), stack.generator(k))
            for k, state in enumerate(states)]


def record(k: int, session: Session, progress: Progress, epoch: int, train_loss: float, valid: dict[str, float],
           state_at_point, stack) -> bool:
    """`fit`'s bookkeeping of one epoch for member k; True when it diverged (reported, not finished)."""
    ctx = session.context
    improved = is_finite(valid.get(ctx.metric)) and ctx.better(valid[ctx.metric], progress.best)
    candidate = state_at_point() if improved else None
    if ctx.metric not in valid:
        raise KeyError(f"selection metric {ctx.metric!r} not among the validation metrics {sorted(valid)}")
    score = valid[ctx.metric]
    if not (is_finite(train_loss) and is_finite(score)):
        session.report({"epoch": epoch, "train_loss": train_loss, **valid})
        return True
    if improved:
        progress.best, progress.best_epoch = score, epoch
        progress.best_state, progress.best_valid = candidate, valid
    progress.track_plateau(score, epoch, ctx, 0.0)
    session.report({"epoch": epoch, "train_loss": train_loss, **valid},
                   checkpoint=progress.checkpoint(epoch, stack.model(k), stack.optimizer(k), stack.generator(k)))
    return False


def finish(members: list[int], configs: list, sessions: list[Session], progress: list[Progress], stack,
           status: str) -> None:
    """`training.finish` for `members`: test metrics at each one's best state (one stacked pass)."""
    tested = [k for k in members if progress[k].best_state is not None]
    test = dict(zip(tested, stack.test([progress[k].best_state for k in tested], tested))) if tested else {}
    for k in members:
        final: dict[str, float] = {"best_epoch": progress[k].best_epoch}
        model = None
        if k in test:
            final.update(progress[k].best_valid)
            final.update(prefixed("test", test[k]))
            model = {"model": progress[k].best_state, "config": configs[k].to_dict()}
        sessions[k].finish(final, model, status)


def train_cohort(configs: list, sessions: list[Session]) -> None:
    """Train the members of one cohort to the shared epoch budget (module docstring)."""
    check_cohort(configs, sessions)
    ctx = sessions[0].context
    data = sequence_data(sessions[0], "rnn", SUITABLE)
    kind = Stacked if configs[0].cell == "tanh" else Lockstep
    stack = kind(configs, [s.context.seed for s in sessions], tensor_splits(data), data.n_features,
                 torch.device(ctx.device))
    progress = restore(sessions, stack)
    for epoch in range(progress[0].start, ctx.max_epochs + 1):
        if not stack.ids:
            break
        losses = [float(loss) for loss in stack.train_epoch()]
        valid, state_at = stack.validate()
        diverged = [k for pos, k in enumerate(stack.ids)
                    if record(k, sessions[k], progress[k], epoch, losses[pos], prefixed("valid", valid[pos]),
                              lambda pos=pos: state_at(pos), stack)]
        finish(diverged, configs, sessions, progress, stack, "diverged")
        stack.drop(diverged)
    finish(list(stack.ids), configs, sessions, progress, stack, "completed")

