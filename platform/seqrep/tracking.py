"""MLflow tracking, written from the Ray driver only (one writer: safe for the embedded sqlite store).

One experiment per study name; a parent run per study attempt tagged with the space, source table,
dataset, seed, searcher, git commit and command line; one child run per trial (tag
`mlflow.parentRunId`, written by `seqrep.mlflow_callback`) with the flattened config as params,
per-epoch metrics at step = epoch, the final metrics, its status and artifacts (resolved config,
best checkpoint, the method's plots).

The trial -> run mapping is kept in `<study>/mlflow_runs.json` (`studydir`), so that a resumed
study re-attaches its trials to the runs they already have instead of opening new ones. This
module imports neither Ray nor torch; MLflow only inside the functions that talk to the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from seqrep import results
from seqrep.errors import SeqrepError

log = logging.getLogger(__name__)

SKIP_KEYS = {"history", "seqrep_status", "trial_id", "date", "hostname", "node_ip", "pid", "done",
             "timestamp", "training_iteration", "time_this_iter_s", "time_since_restore",
             "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint", "config"}


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]).expanduser() if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def impatient_http():
    """MLflow's HTTP client retries with backoff for minutes; a reachability check should not.
    Re-entrant (studies running at once each enter it): the outermost entry sets and restores."""
    with _IMPATIENT_LOCK:
        _IMPATIENT[0] += 1
        if _IMPATIENT[0] == 1:
            _IMPATIENT_SAVED.update({k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                                      "MLFLOW_HTTP_REQUEST_TIMEOUT")})
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "15"
    try:
        yield
    finally:
        with _IMPATIENT_LOCK:
            _IMPATIENT[0] -= 1
            if _IMPATIENT[0] == 0:
                for k, v in _IMPATIENT_SAVED.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


_IMPATIENT_LOCK = threading.Lock()
_IMPATIENT = [0]  # how many impatient_http blocks are open
_IMPATIENT_SAVED: dict[str, str | None] = {}


def check_uri(uri: str) -> None:
    """An embedded store's file must be a file in a folder this process can create or write."""
    from seqrep import paths

    db = _sqlite_path(uri)
    if db is None:
        return
    if db.is_dir():
        raise SeqrepError(f"--tracking-uri {uri}: {db} is a folder; name the database file, e.g. {uri.rstrip('/')}/mlflow.db")
    paths.check_folder(f"--tracking-uri {uri}: the folder", db.parent,
                       fix="pass --tracking-uri with a sqlite:/// path in a folder you can write")


@contextlib.contextmanager
def _quiet_migrations():
    """MLflow announces at INFO level that it creates a new sqlite store's tables: not news for a
    user of the embedded default, so those two lines stay out of the command's output."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def prepare_store(uri: str) -> None:
    """Make sure the tracking store is reachable before any trial starts (clear error otherwise).

    An embedded sqlite store is created (its schema migrated) under a lock beside the database
    file, so drivers that start at once on a new store do not race to create its tables."""
    from seqrep import locks

    check_uri(uri)
    db = _sqlite_path(uri)
    creating = contextlib.nullcontext()
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        creating = locks.store_creation(db)
    try:
        with impatient_http(), creating, _quiet_migrations():
            client(uri).search_experiments(max_results=1)
    except SeqrepError:
        raise
    except Exception as err:  # MLflow raises many types for an unreachable or broken store
        raise SeqrepError(f"cannot reach the MLflow tracking store {uri}: {type(err).__name__}: {err}; "
                          "check --tracking-uri / MLFLOW_TRACKING_URI") from None


def experiment_id(uri: str, name: str) -> str:
    c = client(uri)
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            c.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    db = _sqlite_path(uri)
    # an embedded store keeps its artifacts beside the database, not in ./mlruns of the caller
    location = f"{(db.parent.resolve() / 'mlartifacts' / name).as_uri()}" if db is not None else None
    return c.create_experiment(name, artifact_location=location)


def start_parent(uri: str, study: str, tags: Mapping[str, str]) -> str:
    c = client(uri)
    run = c.create_run(experiment_id(uri, study), run_name=study, tags={k: str(v) for k, v in tags.items()})
    return run.info.run_id


def reopen_run(uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    c = client(uri)
    c.update_run(run_id, status="RUNNING")
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


def run_status(uri: str, run_id: str) -> str | None:
    """A run's status (RUNNING, FINISHED, FAILED, KILLED), None when the store cannot say."""
    try:
        return client(uri).get_run(run_id).info.status
    except Exception as err:  # noqa: BLE001 - an unknown status is only not put back
        log.warning("could not read the status of MLflow run %s: %s", run_id, err)
        return None


def finish_parent(uri: str, run_id: str, artifacts: Iterable[Path], status: str = "FINISHED") -> None:
    c = client(uri)
    for path in artifacts:
        if Path(path).exists():
            c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, status)


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if k not in SKIP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def final_entries(result: Mapping[str, Any], declaration) -> tuple[dict[str, float], int]:
    """What a finished trial's child run gets from its final result: `best_valid_*` (the final
    valid_* belong to the best epoch), `test_*`, the declared `train_*` and `best_epoch`, all at
    step = the best epoch (`seqrep.results` says what the final result holds)."""
    step = int(result.get("best_epoch", 0) or 0)
    final = {**results.final_metrics(result, declaration), "best_epoch": float(step)}
    return {k if k.startswith(("test_", "train_", "best_")) else f"best_{k}": v for k, v in final.items()}, step


def close_open_runs(uri: str, run_ids: Iterable[str], status: str) -> None:
    c = client(uri)
    for run_id in run_ids:
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, status)


class Writer:
    """One background thread that runs tracking calls in order, retrying each a few times.

    Ray Tune calls callbacks inside its event loop; an MLflow round trip there (a tenth of a second
    on sqlite, more on a remote server, forever on a dead one) would stall every trial's results.
    When a call has failed all its tries the store counts as down: calls are skipped for
    `pause_s`, then one is tried again. Nothing is lost for the study: every epoch's metrics stay
    in the trials' result.json, from which trials.parquet is written.
    """

    def __init__(self, study: str, tries: int = 3, backoff_s: float = 1.0, pause_s: float = 30.0):
        self.study, self.tries, self.backoff_s, self.pause_s = study, tries, backoff_s, pause_s
        self.down_until = 0.0
        self.skipped = 0
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="seqrep-mlflow", daemon=True)
        self.thread.start()
        _OPEN_WRITERS.add(self)

    def submit(self, what: str, fn, *args) -> None:
        self.queue.put((what, fn, args))

    def _run(self, what: str, fn, args) -> None:
        if time.monotonic() < self.down_until:
            self.skipped += 1
            _LOST[self.study] = _LOST.get(self.study, 0) + 1
            return
        tries = 1 if self.down_until else self.tries  # while recovering, one probe per call
        for attempt in range(1, tries + 1):
            try:
                fn(*args)
                if self.down_until:
                    log.warning("MLflow is reachable again for study %s (%d calls were skipped)", self.study,
                                self.skipped)
                self.down_until = 0.0
                return
            except Exception as err:  # noqa: BLE001 - a tracking fault must not end the study
                if attempt < tries:
                    time.sleep(self.backoff_s * attempt)
                    continue
                _LOST[self.study] = _LOST.get(self.study, 0) + 1
                if not self.down_until:
                    log.warning("MLflow %s failed for study %s after %d tries: %s: %s. The study goes on; "
                                "its metrics stay in each trial's result.json and trials.parquet is written "
                                "from them; tracking calls pause for %.0f s", what, self.study, attempt,
                                type(err).__name__, err, self.pause_s)
                self.down_until = time.monotonic() + self.pause_s

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                self._run(*item)
            finally:
                self.queue.task_done()

    def close(self) -> None:
        if self in _OPEN_WRITERS:
            _OPEN_WRITERS.discard(self)
            self.queue.put(None)
            self.thread.join()
            if self.skipped:
                log.warning("%d MLflow calls of study %s were skipped while the tracking store was down",
                            self.skipped, self.study)


_OPEN_WRITERS: set[Writer] = set()
_LOST: dict[str, int] = {}  # study -> tracking calls that failed or were skipped in this process


def lost_calls(study: str) -> int:
    """How many of the study's tracking calls this process could not make (`seqrep sync` repairs)."""
    return _LOST.get(study, 0)


def drain(study: str | None = None) -> None:
    """Run every queued tracking call of `study` (None: of every study) in this process and stop
    its writer threads; the writers of studies still running beside it go on."""
    for writer in list(_OPEN_WRITERS):
        if study is None or writer.study == study:
            writer.close()
