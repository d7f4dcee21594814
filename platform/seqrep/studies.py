"""A study before it runs: the budget and placement options, the validated plan, its record.

Everything a user can get wrong is checked here, before Ray starts: the space, the data set and
its files, the budget, the storage and the study folder (a different study under the same name is
refused, never overwritten). The git commit is read once per plan.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from seqrep import data as datasets
from seqrep import locks, paths, spaces, studydir, tracking
from seqrep.cohorts import DEFAULT_SIZE as DEFAULT_COHORT_SIZE
from seqrep.errors import SeqrepError

SEARCHERS = ("random", "optuna")
SCHEDULERS = ("fifo", "asha")
# the numeric flags: type, lowest allowed value, and what the flag must be (the CLI's words too)
LIMITS: dict[str, tuple[type, float, str]] = {
    "--trials": (int, 1, "a positive integer"),
    "--repeats": (int, 1, "a positive integer"),
    "--studies-at-once": (int, 0, "an integer >= 0"),
    "--max-epochs": (int, 1, "a positive integer"),
    "--cpus-per-trial": (float, 0, "a number >= 0 (fractions allowed)"),
    "--gpus-per-trial": (float, 0, "a number >= 0 (fractions allowed)"),
    "--max-concurrent": (int, 0, "an integer >= 0"),
    "--max-failures": (int, 0, "an integer >= 0"),
    "--cohort-size": (int, 1, "a positive integer"),
}


def flag_violation(flag: str, value: Any) -> str | None:
    """'must be ...' when `value` breaks the flag's rule in LIMITS, else None."""
    kind, low, what = LIMITS[flag]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low and value != float("inf")
    if kind is int:
        ok = ok and isinstance(value, int)
    return None if ok else f"must be {what}"


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
    break_lock: bool = False  # take over a study whose lock a driver on another host left
    max_failures: int = 2
    report_interval_s: float = 1.0
    verbose: bool = False  # Ray Tune's full trial table instead of seqrep's progress view
    cohort_size: int = DEFAULT_COHORT_SIZE  # the largest cohort (`seqrep.cohorts`); 1: one config per trial
    command: str | None = None  # the command line to record; default: this process's argv

    def validate(self) -> None:
        for flag in LIMITS:
            value = getattr(self, flag[2:].replace("-", "_"), None)  # --repeats: reproduce checks it
            if value is not None and flag_violation(flag, value):
                raise SeqrepError(f"{flag} {flag_violation(flag, value)}, got {value!r}")
        if self.cpus_per_trial == 0 and self.gpus_per_trial == 0:
            raise SeqrepError("a trial needs some resources: --cpus-per-trial and --gpus-per-trial are both 0")
        if self.searcher not in SEARCHERS:
            raise SeqrepError(f"--searcher must be {' or '.join(SEARCHERS)}, got {self.searcher!r}")
        if self.scheduler not in SCHEDULERS:
            raise SeqrepError(f"--scheduler must be {' or '.join(SCHEDULERS)}, got {self.scheduler!r}")


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
    declares: dict[str, Any] = dataclasses.field(default_factory=dict)  # the method's Declaration

    @functools.cached_property
    def git_commit(self) -> str:
        return git_commit()

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
            "cohort_size": self.options.cohort_size,
            "cpus_per_trial": self.options.cpus_per_trial,
            "gpus_per_trial": self.options.gpus_per_trial,
            "tracking_uri": self.tracking_uri,
            "command": self.options.command or command_line(),
            "git_commit": self.git_commit,
            "declares": self.declares,
        }

    def same_study(self, existing: dict[str, Any]) -> list[str]:
        """The IDENTITY keys in which the study recorded as `existing` differs from this one."""
        mine = self.record()
        return [k for k in IDENTITY if existing.get(k) != mine.get(k)]


def command_line() -> str:
    return shlex.join(["seqrep", *sys.argv[1:]])


@functools.cache  # read once, when the first study is planned: the code this process runs, not a later commit
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _no_count(space: spaces.SearchSpace) -> int:
    raise SeqrepError(f"space {space.name} gives no trial count (the thesis gives none); pass --trials N")


def _trial_count(space: spaces.SearchSpace, asked: int | None) -> int:
    """`--trials`, else the space's count; one for a space that searches nothing (a fixed
    configuration, with or without a grid): a trial's seed is a hash of its config, so its further
    trials would repeat the same run, number for number."""
    trials = asked or space.trials or _no_count(space)
    if trials > 1 and all(d.kind == "grid" for d in space.space.values()):
        _say_fixed(space.name, bool(space.space), trials)
        return 1
    return trials


@functools.cache  # once per space and count, however many data sets and repeats plan it
def _say_fixed(space: str, grid: bool, trials: int) -> None:
    print(f"seqrep: {space} searches nothing (a fixed configuration): 1 trial{' per grid value' if grid else ''}, "
          f"not {trials}, since its trials would repeat one run (same config, same seed); --repeats R runs it "
          f"with R seeds", flush=True)


def plan(space_name: str, dataset: str, options: StudyOptions,
         space: spaces.SearchSpace | None = None) -> StudyPlan:
    """Validate everything about a study without starting anything (`space`: an already loaded,
    possibly narrowed, space to use instead of loading `space_name`)."""
    options.validate()
    git_commit()  # the commit of the code loaded now (a study opened an hour later must not take a newer one)
    space = space or spaces.load(space_name)
    datasets.info(dataset)
    space.check_dataset(dataset)
    from seqrep import methods  # imports the method (and torch): only a study to run needs it
    data_dir = datasets.require(dataset, options.data_dir).resolve()
    name = options.name or f"{space.name}-{dataset}"
    if not name or "/" in name or name.startswith("."):
        raise SeqrepError(f"--name must be a plain directory name, got {name!r}")
    check_places(options)
    return StudyPlan(
        space=space,
        dataset=dataset,
        name=name,
        directory=(Path(options.storage) / name).resolve(),
        trials=_trial_count(space, options.trials),
        max_epochs=options.max_epochs or space.max_epochs,
        options=options,
        tracking_uri=paths.tracking_uri(options.tracking_uri),
        data_dir=data_dir,
        declares=methods.declaration(space.method).to_json(),
    )


def check_places(options: StudyOptions) -> None:
    """The folders a study writes and reads are usable (before Ray starts, not a traceback later)."""
    paths.check_folder("--storage", options.storage)
    paths.check_folder("--data-dir", datasets.resolve_data_dir(options.data_dir), writable=False)
    tracking.check_uri(paths.tracking_uri(options.tracking_uri))


def check_directory(p: StudyPlan) -> dict[str, Any] | None:
    """Refuse a study folder another driver runs; refuse to overwrite another study; insist on
    --resume for an existing one. Returns the existing study's record (None for a new study)."""
    if p.directory.exists() and not p.directory.is_dir():
        raise SeqrepError(f"{p.directory} is a file, not a study folder; choose another --name or --storage")
    locks.check_free(p.directory, p.name, p.options.break_lock)
    existing = studydir.read_record(p.directory)
    if existing is None:
        if p.options.resume:
            raise SeqrepError(f"--resume: nothing to resume in {p.directory} (no study was started there); "
                              "drop --resume to start it")
        if p.directory.exists() and any(f.name not in studydir.LOCK_FILES for f in p.directory.iterdir()):
            raise SeqrepError(f"{p.directory} exists and is not a seqrep study; choose another --name or --storage")
        return None
    different = p.same_study(existing)
    if different:
        raise SeqrepError(
            f"{p.directory} already holds a different study named {p.name!r} (it differs in "
            f"{', '.join(different)}); choose another --name or --storage, nothing was overwritten"
        )
    if not p.options.resume:
        state = "finished" if studydir.is_finished(p.directory) else "unfinished"
        raise SeqrepError(f"study {p.name!r} already exists in {p.directory} ({state}); "
                          "pass --resume to continue it, or another --name to start a new one")
    if not (p.directory / studydir.RAY_DIR / "tuner.pkl").exists():
        raise SeqrepError(f"--resume: {p.directory} holds no Ray Tune state to resume from (the study "
                          "never reached its first trial); remove the folder and start again")
    return existing
