"""Cohorts: what every method's `train_cohort` shares, whatever its stacked model.

A cohort is a set of trials of one random search trained at once as one vectorised model
(`seqrep.method`: `COHORT_KEYS`, `train_cohort(configs, sessions)`). Its members agree on every
config key that fixes a tensor shape (the method's `COHORT_KEYS`: their parameters are stacked on
a leading member axis, and their minibatches too) and on what their contexts share
(`SHARED_CONTEXT_KEYS`: data set, epoch budget, selection, device); they differ in their seeds and
in every other value (step rates, decays, momenta; for the regression methods also the transfer
function and gradient clipping, `trainables.kit.cohort_regression`). Each member is a whole trial:
its session gets every epoch the report its solo `train` would make, with a checkpoint of its own,
and one `finish` with its solo run's final metrics, model and status. What differs from a solo
run is the float rounding of the batched kernels (a batched matmul sums in another order), which
moves a member's numbers by about 1e-7 relative per epoch.

Here: the checks of a cohort's sessions (`check_sessions`), the all-or-none restart
(`restored_states`), one member's epoch bookkeeping (`Member`: best state, selection,
divergence, the final metrics), all as `trainables.kit.training.fit` does them for a solo trial,
and the epoch loop around them (`run_epochs`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

from seqrep.method import MethodConfig, SeqrepError, Session, is_finite
from trainables.kit.training import Progress, prefixed

SHARED_CONTEXT_KEYS = ("dataset", "max_epochs", "metric", "mode", "device")


def check_sessions(configs: Sequence[MethodConfig], sessions: Sequence[Session]) -> None:
    """One session per config, at least one, and contexts that agree on `SHARED_CONTEXT_KEYS`."""
    if not configs or len(configs) != len(sessions):
        raise SeqrepError(f"a cohort needs one session per config and at least one member, but got "
                          f"{len(configs)} configs and {len(sessions)} sessions")
    for key in SHARED_CONTEXT_KEYS:
        values = [getattr(s.context, key) for s in sessions]
        if any(v != values[0] for v in values):
            raise SeqrepError(f"cohort members must share context key {key!r}, but got {values}")


def restored_states(sessions: Sequence[Session]) -> list[dict[str, Any]] | None:
    """Every member's checkpoint on a restart (all from one epoch), or None on a fresh start."""
    states = [s.restore() for s in sessions]
    if all(state is None for state in states):
        return None
    epochs = [None if state is None else int(state["epoch"]) for state in states]
    if any(epoch is None or epoch != epochs[0] for epoch in epochs):
        raise SeqrepError(f"a cohort resumes all its members from one epoch, but their checkpoints are "
                          f"from epochs {epochs} (None: no checkpoint)")
    return states


class Stateful:
    """A member's model or optimiser state as `Progress` reads it (`state_dict`, for a checkpoint)
    or writes it (`load_state_dict`, on a restore): a cohort keeps each member's numbers as rows
    of stacked tensors, not as modules of its own."""

    def __init__(self, state: Any = None, load: Callable[[Any], None] | None = None):
        self._state, self._load = state, load

    def state_dict(self) -> Any:
        return self._state

    def load_state_dict(self, state: Any) -> None:
        self._load(state)


class Deferred(Mapping):
    """A member's checkpoint, built only if its session reads it, and only during its epoch.

    A cohort's sessions in a Ray trial (`seqrep.cohort_session`) persist a checkpoint at most once
    per report interval, so building every member's every epoch (copies of its rows of the stacked
    network and optimiser) would be mostly wasted: a tenth of an NN cohort's time on the toy set.
    The session reads the checkpoint (as a `Mapping`) when it persists it, which a session does
    within the report or finish calls of that epoch; `expire()`, called by the trainer before the
    next training step, makes any later read an error rather than a checkpoint whose fields belong
    to different epochs.
    """

    def __init__(self, build: Callable[[], Mapping[str, Any]]):
        self._build: Callable[[], Mapping[str, Any]] | None = build
        self._value: Mapping[str, Any] | None = None
        self._expired = False

    def _get(self) -> Mapping[str, Any]:
        if self._value is None:
            if self._expired:
                raise RuntimeError("a cohort member's checkpoint was read after its epoch ended; a session must "
                                   "read (persist or copy) a checkpoint before the next training step")
            self._value, self._build = self._build(), None
        return self._value

    def expire(self) -> None:
        """No first read from now on (one already made keeps its value)."""
        self._expired = True

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __reduce__(self):  # saved (`torch.save`, pickle) as the dict it stands for
        return dict, (dict(self._get()),)


@dataclasses.dataclass
class Member:
    """One member of a cohort: its index on the member axis, config, session and progress."""

    index: int
    config: MethodConfig
    session: Session
    progress: Progress = dataclasses.field(default_factory=Progress)
    latest: dict[str, float] = dataclasses.field(default_factory=dict)  # the last epoch's report
    finished: bool = False

    def record(self, epoch: int, train_loss: float, metrics: Mapping[str, float],
               best_state: Callable[[], Any], tolerance: float = 0.0) -> str:
        """One epoch of `training.fit`'s bookkeeping for `metrics` (the validation split's, without
        prefix). Returns "diverged" (non-finite training loss or selection metric: nothing is kept,
        the caller reports and finishes), "improved" (the best state is now `best_state()`, taken
        at the evaluation point, in whatever form the trainer keeps it) or "kept". `tolerance`: the
        relative improvement that moves the plateau mark (`training.fit`'s)."""
        ctx = self.session.context
        valid = prefixed("valid", metrics)
        if ctx.metric not in valid:
            raise KeyError(f"selection metric {ctx.metric!r} not among the validation metrics {sorted(valid)}")
        score = valid[ctx.metric]
        self.latest = {"epoch": epoch, "train_loss": train_loss, **valid}
        if not (is_finite(train_loss) and is_finite(score)):
            return "diverged"
        improved = ctx.better(score, self.progress.best)
        if improved:
            self.progress.best, self.progress.best_epoch = score, epoch
            self.progress.best_state, self.progress.best_valid = best_state(), valid
        self.progress.track_plateau(score, epoch, ctx, tolerance)
        return "improved" if improved else "kept"

    def final(self, test: Mapping[str, float] | None) -> dict[str, float]:
        """The final metrics `training.finish` reports: best epoch, best validation metrics and
        `test` (the test split's at the best state, without prefix; None when there is none)."""
        final: dict[str, float] = {"best_epoch": self.progress.best_epoch}
        if self.progress.best_state is not None and test is not None:
            final.update(self.progress.best_valid)
            final.update(prefixed("test", test))
        return final

    def finish(self, test: Mapping[str, float] | None, model: Mapping[str, Any] | None, status: str) -> None:
        """Finish the member's trial with its final metrics and `model` (what its solo run keeps:
        `{"model": state dict at the best state, "config": ...}`; None without a best state)."""
        self.session.finish(self.final(test), model, status)
        self.finished = True


def run_epochs(members: Sequence[Member], restore: Callable[[Member, Mapping[str, Any]], Progress],
               epoch: Callable[[list[Member], int], list[Deferred]],
               finish: Callable[[list[Member], str], None]) -> None:
    """The cohort's epoch loop: every member's progress from its checkpoint on a restart
    (`restore(member, state)`), then `epoch(active members, epoch)` up to the epoch budget while a
    member is unfinished (it returns the checkpoints it reported, expired before the next epoch
    trains: `Deferred`), then `finish(members, "completed")` for the members still going."""
    sessions = [m.session for m in members]
    states = restored_states(sessions)
    start = 1
    if states is not None:
        for member, state in zip(members, states):
            member.progress = restore(member, state)
        start = members[0].progress.start
    reported: list[Deferred] = []
    for number in range(start, sessions[0].context.max_epochs + 1):
        active = [m for m in members if not m.finished]
        if not active:
            break
        for checkpoint in reported:  # the last epoch's stay readable while the members finish
            checkpoint.expire()
        reported = epoch(active, number)
    finish([m for m in members if not m.finished], "completed")
