"""The small interface a method trains through, and its two implementations.

A method sees only `Session`: it reads its run context (dataset, epoch budget, seed, selection
metric, device), reports metrics once per epoch with the state to resume from, and finishes once
with its final metrics and the model to keep. `LocalSession` runs a method in this process (tests,
benchmarks, a GPU box without Ray); `RaySession` is the Ray Tune adapter. Ray is imported only
inside the adapter, so methods and the local session never need it.

Reporting to Ray Tune costs a few milliseconds per call, which would dominate a 5000-epoch toy
trial, so `RaySession` buffers per-epoch metrics and sends them at most once per
`report_interval_s` (and always with the final result). Every epoch still reaches the driver (as
the result's `history`) and MLflow (step = epoch); the checkpoint sent with each report holds the
latest state, from which a restarted trial resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping

import torch

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
STATUSES = ("completed", "diverged")


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What a trial needs to know besides its hyperparameters."""

    dataset: str
    max_epochs: int
    seed: int  # this trial's own seed, derived from the study seed and the trial's config
    metric: str  # selection metric, e.g. "valid_nll"
    mode: str  # "min" or "max"
    data_dir: str | None = None
    device: str = "cpu"

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best


def trial_seed(study_seed: int, config: Mapping[str, Any]) -> int:
    """A trial's seed: a hash of the study seed and the trial's config (stable across restarts)."""
    blob = json.dumps({"seed": study_seed, "config": dict(config)}, sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "little") & 0x7FFFFFFF


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Session(ABC):
    """What a method calls. See the module docstring for the reporting contract."""

    context: TrialContext

    @abstractmethod
    def report(self, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None) -> None:
        """One epoch's metrics (must hold `epoch`) and the state to resume from.

        The session may persist `checkpoint` now or at a later report; it must hold only what
        `torch.load(weights_only=True)` accepts (tensors, numbers, strings, lists, dicts).
        """

    @abstractmethod
    def finish(self, metrics: Mapping[str, float], model: Mapping[str, Any] | None, status: str) -> None:
        """The trial's last call: final metrics, the model to keep (best checkpoint), its status."""

    @abstractmethod
    def restore(self) -> dict[str, Any] | None:
        """The latest persisted checkpoint of this trial, or None on a fresh start."""

    @property
    @abstractmethod
    def artifact_dir(self) -> Path:
        """A directory for files (plots) that should end up with the trial's run."""


def _roundtrip(state: Mapping[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _snapshot(value: Any) -> Any:
    """A copy that later in-place updates of the model cannot reach (cheaper than a round trip)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    return value


class LocalSession(Session):
    """Runs a method in this process and keeps everything it reported in memory.

    The first checkpoint goes through `torch.save`/`torch.load(weights_only=True)` as with Ray (a
    method whose state that loader refuses fails here too); later ones are in-memory snapshots,
    since a round trip per epoch would cost more than a small model's epoch.
    """

    def __init__(
        self,
        context: TrialContext,
        out_dir: str | Path | None = None,
        resume_from: Mapping[str, Any] | None = None,
    ):
        self.context = context
        self._out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="seqrep-local-"))
        self._out_dir.mkdir(parents=True, exist_ok=True)
        self._resume_from = dict(resume_from) if resume_from is not None else None
        self.history: list[dict[str, float]] = []
        self.checkpoint: dict[str, Any] | None = None
        self.final: dict[str, float] | None = None
        self.model: dict[str, Any] | None = None
        self.status: str | None = None

    def report(self, metrics, checkpoint=None):
        if "epoch" not in metrics:
            raise ValueError("a report must hold the epoch it belongs to")
        self.history.append(dict(metrics))
        if checkpoint is not None:
            self.checkpoint = _snapshot(checkpoint) if self.checkpoint is not None else _roundtrip(checkpoint)

    def finish(self, metrics, model, status):
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.final = dict(metrics)
        self.model = _roundtrip(model) if model is not None else None
        self.status = status

    def restore(self):
        return self._resume_from

    @property
    def artifact_dir(self) -> Path:
        return self._out_dir


class RaySession(Session):
    """The Ray Tune adapter: buffered `tune.report` with directory checkpoints."""

    def __init__(self, context: TrialContext, config: Mapping[str, Any], report_interval_s: float = 1.0):
        from ray import tune

        self._tune = tune
        self.context = context
        self._config = dict(config)
        self._interval = report_interval_s
        self._buffer: list[dict[str, float]] = []
        self._latest: dict[str, float] = {}  # the last epoch's metrics, flushed or not
        self._last_flush = time.monotonic()
        self._artifacts = Path(tempfile.mkdtemp(prefix="seqrep-artifacts-"))

    def _send(self, metrics: dict[str, Any], files: Mapping[str, Any], extra: Path | None = None) -> None:
        directory = Path(tempfile.mkdtemp(prefix="seqrep-ckpt-"))
        try:
            for name, state in files.items():
                torch.save(dict(state), directory / name)
            (directory / CONFIG_FILE).write_text(
                json.dumps({"config": self._config, "context": dataclasses.asdict(self.context)}, indent=2)
            )
            if extra is not None:
                for path in extra.iterdir():
                    if path.is_file():
                        shutil.copy2(path, directory / path.name)
            checkpoint = self._tune.Checkpoint.from_directory(str(directory)) if files else None
            self._tune.report(metrics, checkpoint=checkpoint)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def report(self, metrics, checkpoint=None):
        if "epoch" not in metrics:
            raise ValueError("a report must hold the epoch it belongs to")
        self._buffer.append(dict(metrics))
        self._latest = dict(metrics)
        if time.monotonic() - self._last_flush < self._interval:
            return
        self._flush(checkpoint)

    def _flush(self, checkpoint):
        if not self._buffer:
            return
        latest = dict(self._buffer[-1])
        latest["history"] = self._buffer
        self._send(latest, {STATE_FILE: checkpoint} if checkpoint is not None else {})
        self._buffer = []
        self._last_flush = time.monotonic()

    def finish(self, metrics, model, status):
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        # the latest epoch's metrics first: Ray insists on the selection metric in every result
        result = dict(self._latest)
        result.update(metrics)
        result["history"] = self._buffer
        result["seqrep_status"] = status
        self._send(result, {MODEL_FILE: model if model is not None else {}}, extra=self._artifacts)
        self._buffer = []
        shutil.rmtree(self._artifacts, ignore_errors=True)

    def restore(self):
        checkpoint = self._tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            path = Path(directory) / STATE_FILE
            if not path.exists():
                return None
            return torch.load(path, weights_only=True)

    @property
    def artifact_dir(self) -> Path:
        return self._artifacts


def run_in_ray(config: dict[str, Any], *, method: str, study: Mapping[str, Any], dataset: Any = None) -> None:
    """The function Ray Tune runs for every trial (wrapped with `tune.with_parameters`).

    `dataset` is the data set the driver loaded once; `tune.with_parameters` keeps it in Ray's
    object store, from which each node fetches it once.
    """
    import ray

    from seqrep import data, methods

    if dataset is not None:
        data.ship(study["dataset"], dataset)
    module = methods.resolve(method)
    cfg = module.Config.from_dict(config, where=f"trial config of method {method}")
    cpus = max(1, int(study.get("cpus_per_trial") or 1))
    torch.set_num_threads(cpus)
    gpu_ids = ray.get_gpu_ids()
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    context = TrialContext(
        dataset=study["dataset"],
        max_epochs=int(study["max_epochs"]),
        seed=trial_seed(int(study["seed"]), config),
        metric=study["metric"],
        mode=study["mode"],
        data_dir=study.get("data_dir"),
        device=device,
    )
    interval = float(os.environ.get("SEQREP_REPORT_INTERVAL_S", study.get("report_interval_s", 1.0)))
    module.train(cfg, RaySession(context, config, report_interval_s=interval))


def run_local(method: str, config: Mapping[str, Any], context: TrialContext, **session_kwargs) -> LocalSession:
    """Run one trial of `method` in this process and return the session with all it reported."""
    from seqrep import methods

    module = methods.resolve(method)
    cfg = module.Config.from_dict(dict(config), where=f"config of method {method}")
    session = LocalSession(context, **session_kwargs)
    module.train(cfg, session)
    return session
