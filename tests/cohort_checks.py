"""What the cohort tests share: comparing a member's numbers with its solo run's."""

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
