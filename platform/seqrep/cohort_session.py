"""The Ray Tune adapter of a cohort: one Ray trial, one `seqrep.method.Session` per member.

`run_cohort_in_ray` is the function Ray runs for each cohort (`seqrep.cohorts`). Its members'
sessions share a `CohortChannel`, which does for all of them what `seqrep.session.RaySession` does
for one trial: it buffers every member's per-epoch metrics and sends them at most once per
`report_interval_s`, as one result

    {"epoch": ..., <metric>: best so far over the members, "members": [
        {"member": k, "history": [...epochs since the last result...], <final metrics and
         seqrep_status once the member finished>}, ...]}

with one checkpoint folder holding `m<k>/state.pt` (the latest state of every unfinished member),
`m<k>/model.pt` and the method's files (plots) of every finished member, and `finished.json` (the
finished members' final results). It sends only when every unfinished member has reported the same
number of epochs, so the members' states in a checkpoint belong to one epoch, and not while a member
that reported its last epoch without a state (it diverged) has yet to finish. A state may be built
only when the channel reads it (`trainables.kit.cohort.Deferred`), which it does within the
report or finish call that sends it. A restarted cohort
reads that folder back: finished members keep their result and are not trained again; the others
`restore()` their own state.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from seqrep import memory
from seqrep.cohorts import member_folder
from seqrep.method import STATUSES, Session, TrialContext, is_finite
from seqrep.results import CONFIG_FILE, MEMBERS_KEY, MODEL_FILE, STATE_FILE, STATUS_KEY, trial_seed
from seqrep.session import TrialSpec, check_members, cohort_keys

FINISHED_FILE = "finished.json"


class CohortChannel:
    """Buffers the members' reports and sends them to Ray Tune as one result with one checkpoint."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str, report_interval_s: float):
        from ray import tune

        self._tune, self.configs = tune, configs
        self.metric, self.mode, self.interval = metric, mode, report_interval_s
        size = len(configs)
        self.buffers: list[list[dict[str, float]]] = [[] for _ in range(size)]
        self.latest: list[dict[str, float]] = [{} for _ in range(size)]
        self.counts = [0] * size
        self.states: list[Mapping[str, Any] | None] = [None] * size
        self.stale: set[int] = set()  # open members whose last report came without the state they had
        self.finals: dict[int, dict[str, Any]] = {}
        self.unsent: set[int] = set()
        self.kept = Path(tempfile.mkdtemp(prefix="seqrep-cohort-"))  # finished members' files
        self.best: float | None = None
        self.last_flush = time.monotonic()

    def restore(self) -> dict[int, Mapping[str, Any]]:
        """Read the latest checkpoint back: finished members' results and files; the unfinished
        members' states (returned, by member)."""
        checkpoint = self._tune.get_checkpoint()
        if checkpoint is None:
            return {}
        states = {}
        with checkpoint.as_directory() as directory:
            directory = Path(directory)
            finished = json.loads((directory / FINISHED_FILE).read_text()) if (directory / FINISHED_FILE).exists() else {}
            self.finals = {int(k): v for k, v in finished.items()}
            for k in range(len(self.configs)):
                folder = directory / member_folder(k)
                if k in self.finals and folder.is_dir():
                    shutil.copytree(folder, self.kept / member_folder(k), dirs_exist_ok=True)
                elif (folder / STATE_FILE).exists():
                    states[k] = torch.load(folder / STATE_FILE, weights_only=True)
        return states

    def _open(self) -> list[int]:
        return [k for k in range(len(self.configs)) if k not in self.finals]

    def _at_boundary(self) -> bool:
        counts = {self.counts[k] for k in self._open()}
        return len(counts) <= 1

    def report(self, k: int, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None) -> None:
        if "epoch" not in metrics:
            raise ValueError("a report must hold the epoch it belongs to")
        self.buffers[k].append(dict(metrics))
        self.latest[k] = dict(metrics)
        self.counts[k] += 1
        if checkpoint is not None:
            self.states[k] = checkpoint
            self.stale.discard(k)
        elif self.states[k] is not None:
            # a member that checkpoints reports without a state only as it diverges, right before its
            # `finish`: its older state must not go into a checkpoint beside the others' newer ones
            self.states[k] = None
            self.stale.add(k)
        value = metrics.get(self.metric)
        if is_finite(value) and (self.best is None or (value < self.best if self.mode == "min" else value > self.best)):
            self.best = float(value)
        if self._at_boundary() and not self.stale and time.monotonic() - self.last_flush >= self.interval:
            self.flush()

    def finish(self, k: int, metrics: Mapping[str, float], model: Mapping[str, Any] | None, status: str,
               artifacts: Path) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        final = dict(self.latest[k])
        final.update(metrics)
        final[STATUS_KEY] = status
        self.finals[k], self.states[k] = final, None
        self.stale.discard(k)
        self.unsent.add(k)
        folder = self.kept / member_folder(k)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(dict(model) if model is not None else {}, folder / MODEL_FILE)
        for path in Path(artifacts).iterdir():
            if path.is_file():
                shutil.copy2(path, folder / path.name)
        if not self._open() or (self._at_boundary() and not self.stale
                                and time.monotonic() - self.last_flush >= self.interval):
            self.flush()

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for k in range(len(self.configs)):
            entry: dict[str, Any] = {"member": k, "history": self.buffers[k]}
            if k in self.unsent:
                entry.update(self.finals[k])
            if self.buffers[k] or k in self.unsent:
                entries.append(entry)
        return entries

    def flush(self) -> None:
        entries = self._entries()
        if not entries:
            return
        epochs = [int(m.get("epoch", 0)) for m in self.latest if m]
        result = {"epoch": max(epochs, default=0), self.metric: self.best if self.best is not None else math.nan,
                  MEMBERS_KEY: entries}
        directory = Path(tempfile.mkdtemp(prefix="seqrep-ckpt-"))
        try:
            self._write_checkpoint(directory)
            self._tune.report(result, checkpoint=self._tune.Checkpoint.from_directory(str(directory)))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        self.buffers = [[] for _ in self.configs]
        self.unsent.clear()
        self.last_flush = time.monotonic()

    def _write_checkpoint(self, directory: Path) -> None:
        for k in range(len(self.configs)):
            kept = self.kept / member_folder(k)
            if k in self.finals and kept.is_dir():
                shutil.copytree(kept, directory / member_folder(k))
            elif self.states[k] is not None:
                (directory / member_folder(k)).mkdir()
                torch.save(dict(self.states[k]), directory / member_folder(k) / STATE_FILE)
        (directory / FINISHED_FILE).write_text(json.dumps({str(k): v for k, v in self.finals.items()}, default=str))
        (directory / CONFIG_FILE).write_text(json.dumps({"members": self.configs}, indent=2, default=str))

    def close(self) -> None:
        shutil.rmtree(self.kept, ignore_errors=True)


class MemberSession(Session):
    """One member of a cohort, as its method sees it: a whole `Session` backed by the channel."""

    def __init__(self, channel: CohortChannel, k: int, context: TrialContext, state: Mapping[str, Any] | None):
        self._channel, self._k, self._state = channel, k, state
        self.context = context
        self._artifacts = Path(tempfile.mkdtemp(prefix=f"seqrep-artifacts-m{k}-"))

    def report(self, metrics, checkpoint=None):
        self._channel.report(self._k, metrics, checkpoint)

    def finish(self, metrics, model, status):
        # what a solo trial's checkpoint holds beside its model (`seqrep.session.RaySession`)
        (self._artifacts / CONFIG_FILE).write_text(json.dumps(
            {"config": self._channel.configs[self._k], "context": self.context.describe()}, indent=2, default=str))
        self._channel.finish(self._k, metrics, model, status, self._artifacts)
        shutil.rmtree(self._artifacts, ignore_errors=True)

    def restore(self):
        return dict(self._state) if self._state is not None else None

    @property
    def artifact_dir(self) -> Path:
        return self._artifacts


def run_cohort_in_ray(config: dict[str, Any], *, spec: TrialSpec, dataset: Any,
                      cohorts: list[list[dict[str, Any]]]) -> None:
    """The function Ray Tune runs for each cohort: `config` is `{"cohort": i}`, `cohorts` the member
    configs of every cohort (`seqrep.cohorts`); the members train together through the method's
    `train_cohort`, each with the seed its solo trial would have."""
    import ray

    from seqrep import methods

    members = cohorts[int(config["cohort"])]
    module = methods.resolve(spec.method)
    check_members(spec.method, cohort_keys(module) or (), members)
    cfgs = [module.Config.from_dict(dict(c), where=f"config of cohort member {k} of method {spec.method}")
            for k, c in enumerate(members)]
    torch.set_num_threads(max(1, int(spec.cpus_per_trial or 1)))
    memory.keep_freed_memory()
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    channel = CohortChannel(members, spec.metric, spec.mode, spec.report_interval_s)
    try:
        states = channel.restore()
        todo = [k for k in range(len(members)) if k not in channel.finals]
        sessions = [MemberSession(channel, k, TrialContext(
            dataset=spec.dataset, data=dataset, max_epochs=spec.max_epochs, seed=trial_seed(spec.seed, members[k]),
            metric=spec.metric, mode=spec.mode, device=device), states.get(k)) for k in todo]
        if todo:
            module.train_cohort([cfgs[k] for k in todo], sessions)
        unfinished = [k for k in todo if k not in channel.finals]
        if unfinished:
            raise RuntimeError(f"method {spec.method}: train_cohort returned without finishing member(s) "
                               f"{', '.join(map(str, unfinished))}")
    finally:
        channel.close()
