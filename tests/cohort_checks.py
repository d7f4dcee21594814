"""What the cohort and restart tests share: a member's numbers against its solo run's, a restarted
trial's epochs, and the cohort benchmarks as modules."""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path
from types import ModuleType

import torch

from seqrep.session import LocalSession, run_local_cohort


def load_benchmark(name: str) -> ModuleType:
    """`benchmarks/<name>.py` as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            torch.save(dict(checkpoint), buffer)  # as the sessions save it (a cohort's may be a `Deferred`)
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


def assert_resume_at_3_equals_the_whole(module, method: str, configs: list[dict], contexts: list) -> None:
    """A 6-epoch cohort of `module` (a regression method) and the same cohort resumed from its
    members' epoch-3 checkpoints report and finish alike (1e-6 relative: the float rounding of
    the stacked kernels)."""
    whole = [RecordingSession(c) for c in contexts]
    module.train_cohort([module.Config.from_dict(c) for c in configs], whole)
    at_3 = [s.checkpoints[3] for s in whole]
    assert all(state["epoch"] == 3 for state in at_3)
    rest = run_local_cohort(method, configs, contexts, resume_from=at_3)
    for a, b in zip(whole, rest):
        assert [h["epoch"] for h in b.history] == [4, 5, 6]
        assert b.status == a.status == "completed"
        assert max(d for s, m in zip(a.history[3:], b.history) for d in relative_differences(s, m)) <= 1e-6
        assert max(relative_differences(a.final, b.final)) <= 1e-6
        assert a.final["best_epoch"] == b.final["best_epoch"]
        for name, tensor in a.model["model"].items():
            torch.testing.assert_close(b.model["model"][name], tensor, rtol=1e-6, atol=0)


def assert_members_trained_apart(sessions: list, epochs: int) -> None:
    """Every member of a toy-set regression cohort completed its epochs, ended elsewhere than the
    others, and drew its own predictive plot."""
    assert len({tuple(s.history[-1].values()) for s in sessions}) == len(sessions)  # the members really differ
    assert all(s.status == "completed" and len(s.history) == epochs for s in sessions)
    assert all((s.artifact_dir / "predictive.png").stat().st_size > 10_000 for s in sessions)
