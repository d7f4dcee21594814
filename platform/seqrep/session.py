"""The two implementations of the method-facing `seqrep.method.Session`.

`LocalSession` runs a method in this process (tests, benchmarks, a GPU box without Ray);
`RaySession` is the Ray Tune adapter. Ray is imported only inside the adapter, so methods and the
local session never need it.

Reporting to Ray Tune costs a few milliseconds per call, which would dominate a 5000-epoch toy
trial, so `RaySession` buffers per-epoch metrics and sends them at most once per
`report_interval_s` (and always with the final result). Every epoch still reaches the driver (as
the result's `history`) and MLflow (step = epoch); the checkpoint sent with each report holds the
latest state, from which a restarted trial resumes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from seqrep import memory
from seqrep.method import STATUSES, SeqrepError, Session, TrialContext
from seqrep.results import CONFIG_FILE, MODEL_FILE, STATE_FILE, STATUS_KEY, trial_seed

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
                json.dumps({"config": self._config, "context": self.context.describe()}, indent=2)
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
        if time.monotonic() - self._last_flush < self._interval or metrics["epoch"] >= self.context.max_epochs:
            # the last epoch goes with `finish`: sent alone, ASHA would stop the trial at its budget
            # (max_t) before the trial could send its test metrics
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
        result[STATUS_KEY] = status
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


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares, handed by the driver to `run_in_ray` (picklable)."""

    method: str
    dataset: str
    max_epochs: int
    seed: int  # the study's seed; each trial derives its own with `trial_seed`
    metric: str
    mode: str
    cpus_per_trial: float = 1.0
    report_interval_s: float = 1.0


def run_in_ray(config: dict[str, Any], *, spec: TrialSpec, dataset: Any) -> None:
    """The function Ray Tune runs for every trial (wrapped with `tune.with_parameters`).

    `dataset` is the data set the driver loaded once; `tune.with_parameters` keeps it in Ray's
    object store, from which each node fetches it once, and the session hands it to the method.
    """
    import ray

    from seqrep import methods

    module = methods.resolve(spec.method)
    cfg = module.Config.from_dict(config, where=f"trial config of method {spec.method}")
    torch.set_num_threads(max(1, int(spec.cpus_per_trial or 1)))
    memory.keep_freed_memory()
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    context = TrialContext(dataset=spec.dataset, data=dataset, max_epochs=spec.max_epochs,
                           seed=trial_seed(spec.seed, config), metric=spec.metric, mode=spec.mode, device=device)
    module.train(cfg, RaySession(context, config, report_interval_s=spec.report_interval_s))


def run_local(method: str, config: Mapping[str, Any], context: TrialContext,
              data_dir: str | os.PathLike | None = None, **session_kwargs) -> LocalSession:
    """Run one trial of `method` in this process and return the session with all it reported.

    A context without data (`data=None`) gets the data set `context.dataset` loaded from
    `data_dir` (else `$SEQREP_DATA`, else the cache directory)."""
    from seqrep import data, methods

    module = methods.resolve(method)
    cfg = module.Config.from_dict(dict(config), where=f"config of method {method}")
    if context.data is None:
        context = dataclasses.replace(context, data=data.load(context.dataset, data_dir))
    session = LocalSession(context, **session_kwargs)
    module.train(cfg, session)
    return session


def cohort_keys(module) -> tuple[str, ...] | None:
    """The config keys a method's cohort members must share, or None when it trains no cohorts."""
    if not callable(getattr(module, "train_cohort", None)):
        return None
    return tuple(getattr(module, "COHORT_KEYS", ()))


def check_members(method: str, keys: tuple[str, ...], configs: list[Mapping[str, Any]]) -> None:
    """Members of one cohort agree on every key of `keys`; SeqrepError names the first that differs."""
    for key in keys:
        values = [config.get(key) for config in configs]
        if any(value != values[0] for value in values):
            raise SeqrepError(f"cohort members of method {method} must share {key!r}, but got {values}")


def run_local_cohort(method: str, configs: list[Mapping[str, Any]], contexts: list[TrialContext],
                     data_dir: str | os.PathLike | None = None,
                     resume_from: list[Mapping[str, Any] | None] | None = None) -> list[LocalSession]:
    """Train `configs` as one cohort of `method` in this process; one `LocalSession` per member,
    holding what a solo `run_local` of that member holds. `contexts`: one per member (its own
    seed); a context without data gets the first context's data set loaded once. `resume_from`:
    each member's checkpoint to restart from (a member's `LocalSession.checkpoint`), or None."""
    from seqrep import data, methods

    module = methods.resolve(method)
    keys = cohort_keys(module)
    if keys is None:
        raise SeqrepError(f"method {method} trains no cohorts (its module defines no train_cohort)")
    if not configs or len(configs) != len(contexts):
        raise SeqrepError(f"a cohort needs one context per config and at least one member, but got "
                          f"{len(configs)} configs and {len(contexts)} contexts")
    check_members(method, keys, [dict(c) for c in configs])
    cfgs = [module.Config.from_dict(dict(c), where=f"config of cohort member {k} of method {method}")
            for k, c in enumerate(configs)]
    loaded = contexts[0].data if contexts[0].data is not None else data.load(contexts[0].dataset, data_dir)
    resume_from = resume_from or [None] * len(cfgs)
    sessions = [LocalSession(dataclasses.replace(context, data=loaded) if context.data is None else context,
                             resume_from=resume)
                for context, resume in zip(contexts, resume_from)]
    module.train_cohort(cfgs, sessions)
    return sessions
