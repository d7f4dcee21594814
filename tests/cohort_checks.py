"""What the cohort and restart tests share: a member's numbers against its solo run's, a restarted
trial's epochs."""

from __future__ import annotations

import io
import math

import torch

from seqrep.session import LocalSession


def relative_differences(solo: dict[str, float], member: dict[str, float]) -> list[float]:
    """|member - solo| / |solo| for every finite metric (both non-finite where solo's is)."""
    assert solo.keys() == member.keys()
    out = []
    for key, value in solo.items():
        if math.isfinite(value):
            out.append(abs(member[key] - value) / max(abs(value), 1e-12))
        else:
            assert not math.isfinite(member[key]), key
    return out


def compare_with_solo(session: LocalSession, solo: LocalSession, rel: float) -> float:
    """A member's status, epochs, per-epoch and final metrics (within `rel` relative), best epoch
    and model config against its solo run's; the largest relative difference."""
    assert session.status == solo.status
    assert [row["epoch"] for row in session.history] == [row["epoch"] for row in solo.history]
    diffs = [d for s, m in zip(solo.history, session.history) for d in relative_differences(s, m)]
    diffs += relative_differences(solo.final, session.final)
    assert session.final["best_epoch"] == solo.final["best_epoch"]
    assert max(diffs, default=0.0) <= rel, max(diffs)
    if solo.model is None:
        assert session.model is None
    else:
        assert session.model["config"] == solo.model["config"]
    return max(diffs, default=0.0)


class RecordingSession(LocalSession):
    """A LocalSession that keeps every epoch's checkpoint, as `torch.load(weights_only=True)` reads
    it, and its size in bytes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoints: dict[int, dict] = {}
        self.checkpoint_bytes: dict[int, int] = {}

    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if checkpoint is not None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            self.checkpoint_bytes[metrics["epoch"]] = buffer.tell()
            buffer.seek(0)
            self.checkpoints[metrics["epoch"]] = torch.load(buffer, weights_only=True)


def _alike(a: dict, b: dict) -> bool:
    """The same keys, numbers within 1e-9 relative (NaN matching NaN), everything else equal."""
    def same(x, y) -> bool:
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
        return x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def assert_epochs_once_or_rerun_alike(history: list[dict], epochs: int) -> None:
    """A trial restarted after its worker died reports every epoch 1..`epochs`; the epochs after the
    checkpoint it restarted from may have been reported twice (Ray restores the latest checkpoint
    it had registered, and a worker killed between reporting a result and Ray registering that
    result's checkpoint leaves the previous one), in one stretch, with the same numbers."""
    first: dict[int, dict] = {}
    for row in history:
        if row["epoch"] in first:
            assert _alike(row, first[row["epoch"]]), (row, first[row["epoch"]])
        first.setdefault(row["epoch"], row)
    assert sorted(first) == list(range(1, epochs + 1))
    order = [row["epoch"] for row in history]
    assert sum(b <= a for a, b in zip(order, order[1:])) <= 1  # at most one step back: one restart
