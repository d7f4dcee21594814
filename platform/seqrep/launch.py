"""Run a planned study as a Ray Tune experiment, tracked in MLflow, and write its summary.

`run_study` takes a `seqrep.studies.StudyPlan` (validated before anything starts), starts or joins
Ray, opens (or, on `--resume`, reopens) the study's MLflow parent run, runs the Tuner whose
experiment lives in `<study>/ray/`, and always ends by writing `trials.parquet` and closing the
parent run, however the study ended.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from seqrep import cluster, cohorts, locks, progress, ray_state, reporters, searchers, studydir, summary, sync, tracking
from seqrep import data as datasets
from seqrep.errors import SeqrepError
from seqrep.interrupts import INTERRUPTED, graceful_stop
from seqrep.method import Declaration
from seqrep.mlflow_callback import MlflowTrialCallback
from seqrep.session import TrialSpec, run_in_ray
from seqrep.studies import StudyPlan, check_directory, command_line

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def preload() -> None:
    """Import what `run_study` imports on first use (benchmarks time studies, not imports)."""
    import ray.tune.logger  # noqa: F401
    import ray.tune.schedulers  # noqa: F401
    import ray.tune.search.basic_variant  # noqa: F401


def _trainable(p: StudyPlan, dataset: Any, grouped: list[list[dict[str, Any]]] | None):
    from ray import tune

    o = p.options
    spec = TrialSpec(method=p.space.method, dataset=p.dataset, max_epochs=p.max_epochs, seed=o.seed,
                     metric=p.space.metric, mode=p.space.mode, cpus_per_trial=o.cpus_per_trial,
                     report_interval_s=float(os.environ.get("SEQREP_REPORT_INTERVAL_S", o.report_interval_s)))
    if grouped is None:
        trainable = tune.with_parameters(run_in_ray, spec=spec, dataset=dataset)
    else:
        from seqrep.cohort_session import run_cohort_in_ray

        trainable = tune.with_parameters(run_cohort_in_ray, spec=spec, dataset=dataset, cohorts=grouped)
    trainable = tune.with_resources(trainable, {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial})
    # Ray Tune registers a trainable under its name, once per driver: two studies running at once
    # in one driver (`seqrep reproduce`) must not share one, or a trial could start the other's
    trainable.__name__ = trainable_name(p)
    return trainable


def trainable_name(p: StudyPlan) -> str:
    """The name the study's trainable is registered under: its own, or, for a study Ray recorded
    under another name (one started before names were per study), the recorded one."""
    recorded = p.directory / studydir.RAY_DIR / "tuner.pkl"
    if recorded.exists():
        try:
            import pickle

            with recorded.open("rb") as f:
                name = pickle.load(f).get("__trainable_name")
            if name:
                return name
        except Exception as err:  # noqa: BLE001 - Ray's own check then names the mismatch
            log.warning("could not read the trainable name Ray recorded in %s: %s", recorded, err)
    return "seqrep_" + re.sub(r"\W", "_", p.name)


def _cohorts(p: StudyPlan, previous: dict[str, Any] | None) -> list[list[dict[str, Any]]] | None:
    """The member configs of each cohort (`seqrep.cohorts`), or None when the study trains one
    config per trial: a resumed study keeps the grouping it recorded."""
    if previous is not None:
        return cohorts.read(p.directory)
    o = p.options
    if o.cohort_size < 2 or o.searcher != "random" or o.scheduler != "fifo":
        return None
    from seqrep import methods
    from seqrep.session import cohort_keys

    module = methods.resolve(p.space.method)
    keys = cohort_keys(module)
    if keys is None or not cohorts_pay(module, o.gpus_per_trial):
        return None
    configs = searchers.draw(searchers.to_tune(p.space), o.seed, p.trials)
    grouping = cohorts.group(configs, keys, o.cohort_size, getattr(module, "cohort_group", None))
    indices = cohorts.spread(grouping, cluster.slots(o.cpus_per_trial, o.gpus_per_trial, o.max_concurrent))
    grouped = [[configs[i] for i in members] for members in indices]
    if all(len(members) == 1 for members in grouped) and not getattr(module, "COHORT_OF_ONE", False):
        return None  # no two configs share a shape: every trial runs alone, as without cohorts
    cohorts.write(p.directory, grouped, keys, o.cohort_size, [list(members) for members in indices])
    line = cohorts.describe(grouped, keys, getattr(module, "COHORT_PADDED", ()))
    print(f"seqrep: study {p.name}: {line}; see {studydir.COHORTS_FILE}", flush=True)
    return grouped


def cohorts_pay(module, gpus_per_trial: float) -> bool:
    """Whether the method's cohorts train faster on the device its trials get: `COHORT_DEVICES`
    (default both) names "cuda" for trials with a GPU share, "cpu" for the others."""
    return ("cuda" if gpus_per_trial > 0 else "cpu") in getattr(module, "COHORT_DEVICES", ("cpu", "cuda"))


def _quiet_tune() -> None:
    # Ray's CSV and TensorBoard loggers cannot hold the per-epoch history; result.json can.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # the legacy reporter honours our columns; the new one prints every final result in full
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # a checkpoint per report is by design (the latest state, kept once); no warning needed
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # seqrep handles Ctrl+C: see seqrep.interrupts
    # the driver's threads (studies at once, report sections, the MLflow writer) share the GIL, so
    # Tune's loop is now and then half a second late with a result: not the trials' bottleneck, and
    # its warning ("consider reporting results less frequently") would mislead
    from ray.tune.utils.util import warn_if_slow

    warn_if_slow.DEFAULT_THRESHOLD = max(warn_if_slow.DEFAULT_THRESHOLD, 5.0)


KEPT_CHECKPOINTS = 3  # per trial; see `_resumable`


def _resumable(report_interval_s: float) -> None:
    """A driver killed mid-study resumes from Ray's experiment state, which names each trial's
    latest checkpoint as of its last write, but Ray deletes a trial's older checkpoints as soon as
    newer ones arrive (`num_to_keep`). With one checkpoint kept and the state written every 10 s
    or more (Ray's default), a SIGKILLed driver could leave a state naming a deleted checkpoint
    ("Could not recover from checkpoint as it does not exist on storage anymore"). So the state is
    written every report interval (a trial checkpoints at most once per interval) and three are
    kept: the one the state names survives two newer ones."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(max(0.5, report_interval_s)))


def runs(p: StudyPlan) -> int:
    """How many trials the study runs: its samples times the size of every grid."""
    return p.trials * math.prod(len(d.args) for d in p.space.space.values() if d.kind == "grid")


def _reporter(p: StudyPlan, grouped: list[list[dict[str, Any]]] | None):
    """Ray's own trial table with `--verbose`, else seqrep's one-line view (`seqrep.progress`)."""
    sizes = [len(members) for members in grouped] if grouped is not None else None
    return reporters.reporter(p.space.metric, p.space.mode, p.max_epochs, runs(p), p.name,
                              parameters=list(p.space.space), sizes=sizes, verbose=p.options.verbose)


def _build_tuner(p: StudyPlan, dataset: Any, callbacks: list, grouped: list[list[dict[str, Any]]] | None):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    o = p.options
    param_space, searcher = searchers.search(p.space, o.searcher, o.seed, o.max_concurrent, p.name)
    if grouped is not None:  # one trial per cohort; the configs were drawn with the same seed
        param_space = {"cohort": tune.grid_search(list(range(len(grouped))))}
    _quiet_tune()
    _resumable(float(os.environ.get("SEQREP_REPORT_INTERVAL_S", o.report_interval_s)))
    return tune.Tuner(
        _trainable(p, dataset, grouped),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=p.space.metric,
            mode=p.space.mode,
            search_alg=searcher,
            scheduler=searchers.scheduler(o.scheduler, p.max_epochs),
            num_samples=p.trials if grouped is None else 1,
            max_concurrent_trials=(o.max_concurrent or None) if o.searcher == "optuna" else None,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
            trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            # Ray's experiment folder is a subfolder: on a resume Ray syncs its driver copy of that
            # folder back over storage, which would revert seqrep's own files if they lived there
            name=studydir.RAY_DIR,
            storage_path=str(p.directory),
            callbacks=[JsonLoggerCallback(), *callbacks, ray_state.StateKeeper(p.directory)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS),
            failure_config=tune.FailureConfig(max_failures=o.max_failures),
            progress_reporter=_reporter(p, grouped),
            verbose=1,
        ),
    )


def _parent_tags(p: StudyPlan, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "seqrep.space": p.space.name,
        "seqrep.source": p.space.source,
        "seqrep.method": p.space.method,
        "seqrep.dataset": p.dataset,
        "seqrep.seed": p.options.seed,
        "seqrep.searcher": p.options.searcher,
        "seqrep.scheduler": p.options.scheduler,
        "seqrep.trials": p.trials,
        "seqrep.max_epochs": p.max_epochs,
        "mlflow.source.git.commit": record["git_commit"],
        "seqrep.command": record["command"],
        "seqrep.role": "study",  # how `seqrep sync` finds the parent again
        "seqrep.created": record["created"],
    }


def _open_study(p: StudyPlan, previous: dict[str, Any] | None) -> str:
    """Write the study's record and open its MLflow parent run (reopen it on a resume)."""
    p.directory.mkdir(parents=True, exist_ok=True)
    (p.directory / studydir.FINISHED_FILE).unlink(missing_ok=True)
    record = p.record()
    record["attempts"] = (previous or {}).get("attempts", 0) + 1
    record["created"] = (previous or {}).get("created") or _now()
    if previous is not None:
        parent = previous["parent_run_id"]
        tracking.reopen_run(p.tracking_uri, parent, {"seqrep.attempts": record["attempts"]})
    else:
        parent = tracking.start_parent(p.tracking_uri, p.name, _parent_tags(p, record))
    record["parent_run_id"] = parent
    studydir.write_record(p.directory, record)
    return parent


def _new_tuner(p: StudyPlan, dataset: Any, parent: str):
    grouped = _cohorts(p, None)
    child_tags = {"seqrep.space": p.space.name, "seqrep.dataset": p.dataset, "seqrep.method": p.space.method}
    callback = MlflowTrialCallback(p.tracking_uri, p.name, parent, p.directory, child_tags,
                                   Declaration.from_json(p.declares), grouped)
    return _build_tuner(p, dataset, [callback], grouped)


def _restored_tuner(p: StudyPlan, dataset: Any, previous: dict[str, Any]):
    """The study's Tuner as Ray Tune saved it in `tuner.pkl` (with its MLflow callback), read before
    anything of the study changes."""
    from ray import tune

    _repair_ray_state(p)
    _quiet_tune()
    path, trainable = p.directory / studydir.RAY_DIR, _trainable(p, dataset, _cohorts(p, previous))
    try:
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
    except Exception as err:  # noqa: BLE001 - whatever an unreadable tuner.pkl raises
        raise SeqrepError(f"--resume: Ray Tune could not read the study's Tuner from {path / 'tuner.pkl'} "
                          f"({err!r}); start the study again under another --name") from err


def _put_back(p: StudyPlan, previous: dict[str, Any], finished: str | None, parent_status: str | None) -> None:
    """Undo `_open_study` for a resume Ray Tune refused before any trial ran: the record, the
    finished mark and the parent run's status and attempts as they were."""
    studydir.write_record(p.directory, previous)
    if finished is not None:
        (p.directory / studydir.FINISHED_FILE).write_text(finished)
    if parent_status is None:
        return
    try:
        tracking.reopen_run(p.tracking_uri, previous["parent_run_id"], {"seqrep.attempts": previous.get("attempts", 1)})
        if parent_status != "RUNNING":  # a killed driver's parent run was never ended
            tracking.finish_parent(p.tracking_uri, previous["parent_run_id"], [], parent_status)
    except Exception as err:  # noqa: BLE001 - the study folder is whole either way
        log.warning("could not set MLflow run %s back to %s: %s", previous["parent_run_id"], parent_status, err)


def _close_study(p: StudyPlan, parent: str, status: str, resumed: bool) -> Path:
    """Whatever happened: every queued MLflow call, the summary, the parent run's end; on a resumed
    study also what a killed driver had queued for MLflow but not written (`Syncer.repair`)."""
    tracking.drain(p.name)  # every queued MLflow call runs before the summary and the parent close
    if resumed:
        try:
            writes = sync.Syncer(p.directory, p.tracking_uri).repair()
            if writes.total():
                print(f"seqrep: study {p.name}: wrote to MLflow what the interrupted driver had not: "
                      f"{writes.metric_values} metric values, {writes.runs_ended} trial ends", flush=True)
        except Exception as err:  # noqa: BLE001 - the study folder holds it either way
            log.warning("could not repair the MLflow runs of %s from its folder: %s", p.name, err)
    if tracking.lost_calls(p.name):
        print(f"seqrep: the tracking store {p.tracking_uri} was unavailable during study {p.name}: "
              f"{tracking.lost_calls(p.name)} MLflow calls were not made; every result is on disk: repair "
              f"the store with `seqrep sync {p.directory}`", file=sys.stderr, flush=True)
    out = summary.write(p.directory)
    if status == "FINISHED":
        (p.directory / studydir.FINISHED_FILE).write_text(_now())
    try:
        if status != "FINISHED":  # the lost attempt's trial runs: reopened by --resume
            tracking.close_open_runs(p.tracking_uri, studydir.load_runs(p.directory).values(), "KILLED")
        tracking.finish_parent(p.tracking_uri, parent, [out], status)
    except Exception as err:  # noqa: BLE001 - the summary is on disk either way
        log.warning("could not log the summary to MLflow run %s: %s", parent, err)
    return out


def _repair_ray_state(p: StudyPlan) -> None:
    replaced = ray_state.repair(p.directory)
    if replaced:
        print(f"seqrep: study {p.name}: Ray Tune's run state was cut short or not yet written when its driver was "
              f"killed ({', '.join(replaced)}); resuming from the copy seqrep kept in {ray_state.KEPT_DIR}/", flush=True)


def _fit(p: StudyPlan, dataset: Any, previous: dict[str, Any] | None) -> Path:
    cluster.check_resources(p.options.cpus_per_trial, p.options.gpus_per_trial)
    tuner = before = None
    if previous is not None:  # read before anything of the study changes
        tuner = _restored_tuner(p, dataset, previous)
        before = studydir.finished_at(p.directory), tracking.run_status(p.tracking_uri, previous["parent_run_id"])
    parent = _open_study(p, previous)
    status = "FAILED"
    try:
        if tuner is None:
            tuner = _new_tuner(p, dataset, parent)
        with graceful_stop(), ray_state.refuse_restart(), ray_state.quiet_result_grid():
            tuner.fit()
        status = "KILLED" if INTERRUPTED.is_set() else "FINISHED"
    except ray_state.RestoreRefused:
        status = "REFUSED"
        _put_back(p, previous, *before)
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "REFUSED":
            out = _close_study(p, parent, status, previous is not None)
    if status == "KILLED":
        raise KeyboardInterrupt
    return out


def run_study(p: StudyPlan) -> Path:
    """Run (or resume) the study and write its summary; returns the path of `trials.parquet`.

    A study has one MLflow parent run; `--resume` reopens it (the trial callback that Ray restores
    from `tuner.pkl` writes to it), so the tracking URI of a resumed study cannot change. Progress
    goes to the command's `progress.View` (a view of this one study when none is active), or,
    with `--verbose`, to Ray Tune's trial table.
    """
    previous = check_directory(p)
    dataset = datasets.load(p.dataset, p.data_dir)  # checked once here, shipped to trials via Ray
    with contextlib.ExitStack() as stack:
        view = progress.active()
        if view is None and not p.options.verbose:
            view = stack.enter_context(progress.showing(progress.View(1, [runs(p) * p.max_epochs])))
        stack.enter_context(tracking.impatient_http())
        tracking.prepare_store(p.tracking_uri)
        stack.enter_context(locks.hold(p.directory, p.name, p.options.command or command_line(), p.options.break_lock))
        previous = check_directory(p)  # again, now that this driver owns the study folder
        if previous is not None and previous.get("tracking_uri") != p.tracking_uri:
            raise SeqrepError(f"study {p.name!r} was tracked in {previous.get('tracking_uri')}; "
                              f"resume it with --tracking-uri {previous.get('tracking_uri')}")
        if view is not None:
            view.start_study(p.name, p.space.metric, p.space.mode, runs(p) * p.max_epochs)
        started = cluster.connect(p.options.address)
        try:
            return _fit(p, dataset, previous)
        finally:
            if view is not None:
                view.end_study(p.name)
            if started:
                import ray

                ray.shutdown()
