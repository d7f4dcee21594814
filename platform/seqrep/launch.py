"""Build and run the Ray Tune study for one search space and data set.

Everything a user can get wrong is checked before Ray starts a trial: the space, the data set and
its files, the budget, the resources (against what the cluster has), the tracking store, and the
study directory (a different study under the same name is refused, never overwritten).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from seqrep import data as datasets
from seqrep import paths, spaces, summary, tracking
from seqrep.errors import SeqrepError
from seqrep.session import run_in_ray

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
FINISHED_FILE = ".finished"
# what makes two studies "the same": a resume or a reuse must match on all of these
IDENTITY = ("space", "resolved_space", "dataset", "seed", "trials", "max_epochs", "searcher", "scheduler")


@dataclasses.dataclass
class StudyOptions:
    """The budget and placement flags shared by `seqrep search` and `seqrep reproduce`."""

    trials: int | None = None  # None: the space's count
    max_epochs: int | None = None  # None: the space's
    seed: int = 0
    name: str | None = None  # None: <space>-<dataset>
    storage: str = str(paths.DEFAULT_STORAGE)
    tracking_uri: str | None = None
    data_dir: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    searcher: str = "random"
    scheduler: str = "fifo"
    address: str | None = None
    resume: bool = False
    max_failures: int = 2
    report_interval_s: float = 1.0
    command: str | None = None  # the command line to record; default: this process's argv

    def validate(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise SeqrepError(f"--trials must be at least 1, got {self.trials}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise SeqrepError(f"--max-epochs must be at least 1, got {self.max_epochs}")
        for flag, value in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise SeqrepError(f"{flag} must be a number >= 0, got {value!r}")
        if self.cpus_per_trial == 0 and self.gpus_per_trial == 0:
            raise SeqrepError("a trial needs some resources: --cpus-per-trial and --gpus-per-trial are both 0")
        if self.max_concurrent is not None and self.max_concurrent < 0:
            raise SeqrepError(f"--max-concurrent must be >= 0 (0: no limit), got {self.max_concurrent}")
        if self.searcher not in ("random", "optuna"):
            raise SeqrepError(f"--searcher must be random or optuna, got {self.searcher!r}")
        if self.scheduler not in ("fifo", "asha"):
            raise SeqrepError(f"--scheduler must be fifo or asha, got {self.scheduler!r}")
        if self.max_failures < 0:
            raise SeqrepError(f"--max-failures must be >= 0, got {self.max_failures}")


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """A validated study: what `run_study` will run and record."""

    space: spaces.SearchSpace
    dataset: str
    name: str
    directory: Path
    trials: int
    max_epochs: int
    options: StudyOptions
    tracking_uri: str
    data_dir: Path

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "space": self.space.name,
            "space_path": str(self.space.path),
            "resolved_space": self.space.to_json(),
            "method": self.space.method,
            "source": self.space.source,
            "dataset": self.dataset,
            "metric": self.space.metric,
            "mode": self.space.mode,
            "seed": self.options.seed,
            "trials": self.trials,
            "max_epochs": self.max_epochs,
            "searcher": self.options.searcher,
            "scheduler": self.options.scheduler,
            "cpus_per_trial": self.options.cpus_per_trial,
            "gpus_per_trial": self.options.gpus_per_trial,
            "tracking_uri": self.tracking_uri,
            "command": self.options.command or command_line(),
            "git_commit": git_commit(),
        }


def command_line() -> str:
    return shlex.join(["seqrep", *sys.argv[1:]])


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_record(directory: Path) -> dict[str, Any] | None:
    path = directory / STUDY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def is_finished(directory: Path) -> bool:
    return (directory / summary.SUMMARY_FILE).exists() and (directory / FINISHED_FILE).exists()


def _no_count(space: spaces.SearchSpace) -> int:
    raise SeqrepError(f"space {space.name} gives no trial count (the thesis gives none); pass --trials N")


def plan(space_name: str, dataset: str, options: StudyOptions,
         space: spaces.SearchSpace | None = None) -> StudyPlan:
    """Validate everything about a study without starting anything (`space`: an already loaded,
    possibly narrowed, space to use instead of loading `space_name`)."""
    options.validate()
    space = space or spaces.load(space_name)
    datasets.info(dataset)
    space.check_dataset(dataset)
    data_dir = datasets.require(dataset, options.data_dir).resolve()
    name = options.name or f"{space.name}-{dataset}"
    if not name or "/" in name or name.startswith("."):
        raise SeqrepError(f"--name must be a plain directory name, got {name!r}")
    return StudyPlan(
        space=space,
        dataset=dataset,
        name=name,
        directory=(Path(options.storage) / name).resolve(),
        trials=options.trials or space.trials or _no_count(space),
        max_epochs=options.max_epochs or space.max_epochs,
        options=options,
        tracking_uri=paths.tracking_uri(options.tracking_uri),
        data_dir=data_dir,
    )


def check_directory(p: StudyPlan) -> None:
    """Refuse to overwrite another study; insist on --resume for an existing one."""
    existing = read_record(p.directory)
    if existing is None:
        if p.options.resume:
            raise SeqrepError(f"--resume: nothing to resume in {p.directory} (no study was started there); "
                              "drop --resume to start it")
        if p.directory.exists() and any(p.directory.iterdir()):
            raise SeqrepError(f"{p.directory} exists and is not a seqrep study; choose another --name or --storage")
        return
    mine = p.record()
    different = [k for k in IDENTITY if existing.get(k) != mine.get(k)]
    if different:
        raise SeqrepError(
            f"{p.directory} already holds a different study named {p.name!r} (it differs in "
            f"{', '.join(different)}); choose another --name or --storage, nothing was overwritten"
        )
    if not p.options.resume:
        state = "finished" if is_finished(p.directory) else "unfinished"
        raise SeqrepError(f"study {p.name!r} already exists in {p.directory} ({state}); "
                          "pass --resume to continue it, or another --name to start a new one")
    if not (p.directory / summary.RAY_DIR / "tuner.pkl").exists():
        raise SeqrepError(f"--resume: {p.directory} holds no Ray Tune state to resume from (the study "
                          "never reached its first trial); remove the folder and start again")


def _connect(address: str | None) -> bool:
    """Join `address` or start a local Ray; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                  logging_config=ray.LoggingConfig(log_level="WARNING"))
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except Exception as err:  # ConnectionError, RuntimeError, auth errors
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise SeqrepError(f"cannot start or join {where}: {type(err).__name__}: {err}") from None
    return True


AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the config on the head


def _autoscaled_node_types() -> dict[str, dict[str, float]]:
    """Resources of the node types the autoscaler may start (only on a `ray up` head node)."""
    path = AUTOSCALER_CONFIG.expanduser()
    if not path.exists():
        return {}
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    return {name: dict(spec.get("resources") or {}) for name, spec in (config.get("available_node_types") or {}).items()
            if (spec.get("max_workers") or 0) > 0 or name == config.get("head_node_type")}


def check_resources(cpus: float, gpus: float) -> None:
    """A trial that no node can hold would wait forever: fail now, naming what is there.

    Live nodes count, and so do the node types an autoscaler can still start.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
        return
    node_types = _autoscaled_node_types()
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in node_types.values()):
        return
    have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                     f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
    scalable = "; node types the autoscaler can start: " + ", ".join(
        f"{name}: {r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for name, r in node_types.items()) \
        if node_types else ""
    raise SeqrepError(f"no node of the Ray cluster can hold one trial ({cpus:g} CPU, {gpus:g} GPU); "
                      f"nodes: {have or 'none'}{scalable}; lower --cpus-per-trial/--gpus-per-trial or add nodes")


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _catch_interrupt():
    """First Ctrl+C: stop the study gracefully (resumable); a second one: abort at once.

    Ray Tune's own SIGINT handler stops gracefully but leaves no trace of it: `fit()` returns as if
    the study had finished. So seqrep takes SIGINT itself (TUNE_DISABLE_SIGINT_HANDLER), notes the
    interrupt and forwards it as SIGUSR1, on which Ray Tune always runs that same graceful stop.
    """
    _INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if _INTERRUPTED.is_set() or not hasattr(signal, "SIGUSR1"):
            raise KeyboardInterrupt
        _INTERRUPTED.set()
        print("\nseqrep: stopping the study after the trials' latest checkpoints "
              "(press Ctrl+C again to abort at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _trainable(p: StudyPlan, dataset: Any):
    from ray import tune

    o = p.options
    study = {
        "dataset": p.dataset,
        "max_epochs": p.max_epochs,
        "metric": p.space.metric,
        "mode": p.space.mode,
        "seed": o.seed,
        "data_dir": str(p.data_dir),
        "cpus_per_trial": o.cpus_per_trial,
        "report_interval_s": o.report_interval_s,
    }
    return tune.with_resources(
        tune.with_parameters(run_in_ray, method=p.space.method, study=study, dataset=dataset),
        {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial},
    )


def _build_tuner(p: StudyPlan, dataset: Any, callbacks: list):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space, o = p.space, p.options
    if o.searcher == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        param_space = dict(space.fixed)
        searcher = OptunaSearch(space=spaces.to_optuna(space), metric=space.metric, mode=space.mode,
                                sampler=TPESampler(seed=o.seed))
    else:
        param_space = spaces.to_tune(space)
        # Ray ignores TuneConfig.max_concurrent_trials for a BasicVariantGenerator: give it here
        searcher = BasicVariantGenerator(random_state=o.seed, max_concurrent=o.max_concurrent or 0)
    if o.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=p.max_epochs, grace_period=max(1, p.max_epochs // 16))
    else:
        scheduler = FIFOScheduler()
    _quiet_tune()
    return tune.Tuner(
        _trainable(p, dataset),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=p.trials,
            max_concurrent_trials=(o.max_concurrent or None) if o.searcher == "optuna" else None,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            # Ray's experiment folder is a subfolder: on a resume Ray syncs its driver copy of that
            # folder back over storage, which would revert seqrep's own files if they lived there
            name=summary.RAY_DIR,
            storage_path=str(p.directory),
            callbacks=[JsonLoggerCallback(), *callbacks],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=o.max_failures),
            progress_reporter=_reporter(space),
            verbose=1,
        ),
    )


def _quiet_tune() -> None:
    # Ray's CSV and TensorBoard loggers cannot hold the per-epoch history; result.json can.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # the legacy reporter honours our columns; the new one prints every final result in full
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # a checkpoint per report is by design (the latest state, kept once); no warning needed
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # seqrep handles Ctrl+C: see _catch_interrupt


def _reporter(space: spaces.SearchSpace):
    from ray.tune import CLIReporter

    return CLIReporter(
        metric_columns={"epoch": "epoch", space.metric: space.metric},
        parameter_columns=list(space.space)[:6],
        max_report_frequency=30,  # sort_by_metric would crash on trials stopped before any result
    )


def run_study(p: StudyPlan) -> Path:
    """Run (or resume) the study and write its summary; returns the path of `trials.parquet`.

    A study has one MLflow parent run; `--resume` reopens it (the trial callback that Ray restores
    from `tuner.pkl` writes to it), so the tracking URI of a resumed study cannot change.
    """
    check_directory(p)
    dataset = datasets.load(p.dataset, p.data_dir)  # checked once here, shipped to trials via Ray
    with tracking.impatient_http():
        return _run_study(p, dataset)


def _run_study(p: StudyPlan, dataset: Any) -> Path:
    tracking.prepare_store(p.tracking_uri)
    previous = read_record(p.directory)
    if previous is not None and previous.get("tracking_uri") != p.tracking_uri:
        raise SeqrepError(f"study {p.name!r} was tracked in {previous.get('tracking_uri')}; "
                          f"resume it with --tracking-uri {previous.get('tracking_uri')}")
    started = _connect(p.options.address)
    try:
        check_resources(p.options.cpus_per_trial, p.options.gpus_per_trial)
        p.directory.mkdir(parents=True, exist_ok=True)
        (p.directory / FINISHED_FILE).unlink(missing_ok=True)
        record = p.record()
        record["attempts"] = (previous or {}).get("attempts", 0) + 1
        record["created"] = (previous or {}).get("created") or datetime.datetime.now().isoformat(timespec="seconds")
        if previous is not None:
            parent = previous["parent_run_id"]
            tracking.reopen_run(p.tracking_uri, parent, {"seqrep.attempts": record["attempts"]})
        else:
            tags = {
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
            }
            parent = tracking.start_parent(p.tracking_uri, p.name, tags)
        record["parent_run_id"] = parent
        summary.write_json_atomic(p.directory / STUDY_FILE, record)
        status = "FAILED"
        try:
            if previous is not None:
                from ray import tune

                _quiet_tune()
                tuner = tune.Tuner.restore(str(p.directory / summary.RAY_DIR), trainable=_trainable(p, dataset),
                                           resume_unfinished=True)
            else:
                child_tags = {"seqrep.space": p.space.name, "seqrep.dataset": p.dataset,
                              "seqrep.method": p.space.method}
                callback = tracking.MlflowTrialCallback(p.tracking_uri, p.name, parent, p.directory, child_tags)
                tuner = _build_tuner(p, dataset, [callback])
            with _catch_interrupt():
                tuner.fit()
            status = "KILLED" if _INTERRUPTED.is_set() else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracking.drain()  # every queued MLflow call runs before the summary and the parent close
            out = summary.write(p.directory)
            if status == "FINISHED":
                (p.directory / FINISHED_FILE).write_text(datetime.datetime.now().isoformat(timespec="seconds"))
            try:
                if status != "FINISHED":  # the lost attempt's trial runs: reopened by --resume
                    tracking.close_open_runs(p.tracking_uri, tracking.load_runs(p.directory).values(), "KILLED")
                tracking.finish_parent(p.tracking_uri, parent, [out], status)
            except Exception as err:  # noqa: BLE001 - the summary is on disk either way
                log.warning("could not log the summary to MLflow run %s: %s", parent, err)
        if status == "KILLED":
            raise KeyboardInterrupt
        return out
    finally:
        if started:
            import ray

            ray.shutdown()


def _available_studies(table: str, needed: list[tuple[str, str]], data_dir: str | None) -> list[tuple[str, str]]:
    """The studies whose data sets are all in the data directory; the others are named and skipped.
    None left: the missing-data error of the first, so the user learns what to fetch."""
    from seqrep import data as seqrep_data

    have, lacking = [], {}
    for space_name, dataset in needed:
        missing = seqrep_data.missing_files(dataset, data_dir)
        if missing:
            lacking.setdefault(dataset, missing)
        else:
            have.append((space_name, dataset))
    if lacking and not have:
        first = next(iter(lacking))
        seqrep_data.require(first, data_dir)  # raises, naming the files and where to get them
    for dataset, missing in lacking.items():
        print(f"seqrep: {table}: skipping {dataset}, whose files are not in the data directory "
              f"({', '.join(str(m) for m in missing)}); `seqrep reproduce {table} --dataset {dataset}` says how "
              f"to get them", flush=True)
    return have


def reproduce(table: str, datasets: list[str] | None, options: StudyOptions, out_dir: Path,
              splits: int | None = None) -> tuple[Path, Path]:
    """Run the studies a thesis table needs (reusing identical finished ones) and write the table.

    `splits`: for spaces with a grid over UCI splits (Table 8), run splits 0 .. splits-1."""
    from seqrep import tables
    from seqrep.data import resolve_data_dir
    from seqrep.data.regression import split_space

    options.validate()
    needed = tables.studies_for(table, datasets)
    if not datasets:  # the whole table: rebuild what the data directory allows, say what it lacks
        needed = _available_studies(table, needed, options.data_dir)
    plans = []
    for space_name, dataset in needed:  # validate every study before running any
        study_options = dataclasses.replace(
            options, name=f"{options.name}-{space_name}-{dataset}" if options.name else None)
        space = split_space(spaces.load(space_name), dataset, splits, resolve_data_dir(options.data_dir))
        plans.append(plan(space_name, dataset, study_options, space))
    if splits is not None and not any("split" in p.space.space for p in plans):
        raise SeqrepError(f"--splits applies to tables run once per UCI split (table8), not to {table}")
    directories: dict[tuple[str, str], Path] = {}
    for p in plans:
        existing = read_record(p.directory)
        if existing is None:
            p.options.resume = False  # --resume continues the studies that exist and starts the others
        reusable = existing is not None and is_finished(p.directory) and not p.options.resume and all(
            existing.get(k) == p.record().get(k) for k in IDENTITY)
        if reusable:
            print(f"seqrep: reusing the finished study {p.name} in {p.directory}", flush=True)
        else:
            print(f"seqrep: running study {p.name} ({p.trials} trials, {p.max_epochs} epochs)", flush=True)
            run_study(p)
        directories[(p.space.name, p.dataset)] = p.directory
    frame = tables.build(table, lambda space, dataset: directories.get((space, dataset)), datasets)
    md, csv = tables.write(table, frame, out_dir)
    for p in plans:
        record = read_record(p.directory) or {}
        if record.get("parent_run_id"):
            try:
                for path in (md, csv):
                    tracking.client(p.tracking_uri).log_artifact(record["parent_run_id"], str(path), "tables")
            except Exception as err:  # noqa: BLE001 - the table is on disk either way
                log.warning("could not log %s to MLflow: %s", table, err)
    return md, csv
