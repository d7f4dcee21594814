"""`seqrep reproduce TABLE`: run the studies a thesis table needs, then rebuild the table.

Every study is planned (validated) before any runs; a finished study with the same identity is
reused instead of run again; data sets whose files are absent are named and skipped when the
whole table is asked for. The table itself is `seqrep.tables`'s business.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import math
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seqrep import data as seqrep_data
from seqrep import locks, progress, spaces, studydir, tables, tracking
from seqrep.data.regression import DEFAULT_SPLITS, n_splits
from seqrep.errors import SeqrepError
from seqrep.studies import StudyOptions, StudyPlan, flag_violation, plan

log = logging.getLogger(__name__)


def split_space(space, dataset: str, splits: int | None, root: Path):
    """`space` with its `split` grid set to 0 .. K-1 for `seqrep reproduce table8 --splits K`
    (K default: 10, or all of the set's splits if it has fewer). Spaces without a split grid are
    returned unchanged; K outside 1 .. n_splits is an error naming the data set."""
    dist = space.space.get("split")
    if dist is None or dist.kind != "grid" or not dataset.startswith("uci-"):
        return space
    available = n_splits(dataset, root)
    k = min(DEFAULT_SPLITS, available) if splits is None else splits
    if not 1 <= k <= available:
        raise SeqrepError(f"--splits {k}: {dataset} has {available} splits; pass --splits between 1 and {available}")
    return spaces.with_grid(space, "split", list(range(k)))


def _available_studies(table: str, needed: list[tuple[str, str]], data_dir: str | None) -> list[tuple[str, str]]:
    """The studies whose data sets are all in the data directory; the others are named and skipped.
    None left: the missing-data error of the first, so the user learns what to fetch."""
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


def _repeat_options(options: StudyOptions, space_name: str, dataset: str, repeat: int) -> StudyOptions:
    """Repeat r runs with seed + r; its name is the study's usual one, suffixed -seed<S> for r > 0
    (so repeat 0 is, and reuses, the study a plain `reproduce` runs)."""
    seed = options.seed + repeat
    base = f"{options.name}-{space_name}-{dataset}" if options.name else f"{space_name}-{dataset}"
    return dataclasses.replace(options, seed=seed, name=base if repeat == 0 else f"{base}-seed{seed}")


def _plans(table: str, datasets: list[str] | None, options: StudyOptions, splits: int | None,
           repeats: int = 1) -> list[StudyPlan]:
    """Every study of the table (each `repeats` times), validated before any runs."""
    needed = tables.studies_for(table, datasets)
    if not datasets:  # the whole table: rebuild what the data directory allows, say what it lacks
        needed = _available_studies(table, needed, options.data_dir)
    root = seqrep_data.resolve_data_dir(options.data_dir)
    plans = []
    for space_name, dataset in needed:
        space = split_space(spaces.load(space_name), dataset, splits, root)
        for repeat in range(repeats):
            plans.append(plan(space_name, dataset, _repeat_options(options, space_name, dataset, repeat), space))
    if splits is not None and not any("split" in p.space.space for p in plans):
        raise SeqrepError(f"--splits applies to tables run once per UCI split (table8), not to {table}")
    return plans


def _reusable(p: StudyPlan) -> bool:
    """Whether an identical finished study is there to reuse; --resume continues the studies that
    exist and starts the others."""
    existing = studydir.read_record(p.directory)
    if existing is None:
        p.options.resume = False
    return existing is not None and studydir.is_finished(p.directory) and not p.options.resume \
        and not p.same_study(existing)


class _EarlySections:
    """Draws a study's report section (`seqrep.report.study_section`) as soon as the study ends, while
    the table's other studies still train; the table's report then takes it as drawn. One at a time
    (matplotlib's figures are drawn in the studies' threads); a failure leaves it to the report."""

    def __init__(self, table: str, out_dir: Path):
        self.table, self.out_dir = table, Path(out_dir)
        self.reference = tables.load_reference(table)
        self.sections: dict[Path, dict] = {}
        self.lock = threading.Lock()

    def __call__(self, p: StudyPlan) -> None:
        from seqrep import report  # matplotlib and optuna: loaded when a report is drawn

        inputs = report.study_inputs(self.reference, p.space.name, p.dataset)
        try:
            with self.lock:
                folder = report.figures_folder(self.table, self.out_dir)
                folder.mkdir(parents=True, exist_ok=True)
                self.sections[p.directory.resolve()] = report.study_section(p.directory, folder, *inputs)
        except Exception as err:  # noqa: BLE001 - the table's report draws it again
            log.warning("could not draw the report section of %s now: %s", p.name, err)


def _run(plans: list[StudyPlan], verbose: bool, at_once: int = 0, after=None) -> None:
    """Run every study that cannot be reused, under one progress view of them all: up to `at_once`
    of them at the same time (0: all, started in turn as `_Turns` says), one after another when 1; `after(plan)` once a study has
    finished, in a thread of its own while the others go on (one call at a time, all done when
    this returns)."""
    from seqrep import cluster, tune_threads

    to_run = []
    for p in plans:
        if _reusable(p):
            print(f"seqrep: reusing the finished study {p.name} in {p.directory}", flush=True)
        else:
            to_run.append(p)
    for p in to_run:  # a study another driver runs: refused before any study starts
        locks.check_free(p.directory, p.name, p.options.break_lock)
    warming = _warm_up(to_run)
    # `after` runs in a thread of its own, so that the studies go on (and Ray shuts down) meanwhile;
    # leaving the executor waits for it
    with ThreadPoolExecutor(1, thread_name_prefix="seqrep-after") as afterwards, _one_ray(to_run):
        if warming is not None:
            warming.join()
        from seqrep import slot_shares
        from seqrep.launch import runs  # Ray: imported when a study runs

        then = None if after is None else (lambda p: afterwards.submit(after, p))
        view = progress.View(len(to_run), [runs(p) * p.max_epochs for p in to_run])
        with progress.showing(view) if not verbose and to_run else contextlib.nullcontext():
            if at_once != 1 and len(to_run) > 1 and tune_threads.enable():
                o = to_run[0].options
                turns = (_Turns([p.name for p in to_run], progress.active(),
                                cluster.slots(o.cpus_per_trial, o.gpus_per_trial, o.max_concurrent))
                         if at_once == 0 else None)
                with slot_shares.sharing(turns.share) if turns is not None else contextlib.nullcontext():
                    _run_at_once(to_run, at_once or len(to_run), then, turns)
            else:
                _run_in_turn(to_run, then)


def _warm_up(plans: list[StudyPlan]) -> threading.Thread | None:
    """While Ray starts (seconds the driver spends waiting on its processes), import Ray Tune and
    seqrep's launcher and open the studies' MLflow stores (import, schema check) in a thread: work
    every study needs first, which would otherwise follow Ray's start. Whatever fails here fails
    again, with its own message, where the study does it."""

    def warm() -> None:
        try:
            import seqrep.launch  # noqa: F401 - Ray Tune and its dependencies

            for uri in sorted({p.tracking_uri for p in plans}):
                tracking.prepare_store(uri)
        except Exception as err:  # noqa: BLE001 - the study reports it
            log.debug("warming up failed: %s", err)

    if not plans:
        return None
    thread = threading.Thread(target=warm, name="seqrep-warm-up", daemon=True)
    thread.start()
    return thread


def _run_in_turn(plans: list[StudyPlan], after=None) -> None:
    from seqrep.launch import run_study

    for p in plans:
        print(f"seqrep: running study {p.name} ({p.trials} trials, {p.max_epochs} epochs)", flush=True)
        run_study(p)
        if after is not None:
            after(p)


class _Turns:
    """When `_run_at_once` starts each of a table's studies if all may run at once: in plan order,
    the first as many as the cluster has trial slots at once, each later one once every running
    study has had a trial running (as the progress view last heard from Ray Tune). So at most one
    study waits for a slot beyond those that hold one, set up already (its Tuner, its MLflow
    parent), and takes the next slot freed; the table ends with its last studies rather than with
    whichever trial Ray happened to start last. With every study asking for slots at once Ray
    handed them out in an order of its own: Table 7 on the toy set (2 cores, 2026-12-03) took
    139.9-146.3 s (three runs) against 131.3-133.9 s started in turn (131.8 and 133.4 s with this
    rule; Table 10 on UCR CBF, whose studies are seconds long, 22.0 and 23.8 s against 21.8-24.6 s
    all at once; waiting until a study had all its trials started cost Table 10 3 s)."""

    def __init__(self, names: list[str], view: progress.View | None, slots: int):
        self.order, self.view, self.slots = list(names), view, slots
        self.released: list[str] = []
        self.ended: set[str] = set()
        self.lock = threading.Lock()

    def wait(self, name: str, stop: threading.Event) -> bool:
        """Block until study `name` may start (True), or `stop` is set (False)."""
        while not stop.is_set():
            with self.lock:
                head = self.order[len(self.released)]
                going = [n for n in self.released if n not in self.ended]
                if head == name and (self.view is None or len(going) < self.slots
                                     or all(self.view.training(n) for n in going)):
                    self.released.append(name)
                    return True
            time.sleep(0.1)
        return False

    def end(self, name: str) -> None:
        with self.lock:
            self.ended.add(name)

    def share(self, name: str) -> int | None:
        """How many trials study `name` may hold at once (`seqrep.slot_shares`): the slots over the
        table's studies not ended (started or waiting), rounded up so that no slot idles while a
        study has trials to run; None for a study not of this table."""
        with self.lock:
            if name not in self.order:
                return None
            unfinished = sum(1 for n in self.order if n not in self.ended)
        return max(1, math.ceil(self.slots / max(1, unfinished)))


def _run_at_once(plans: list[StudyPlan], at_once: int, after=None, turns: _Turns | None = None) -> None:
    """Run the studies in `at_once` threads (each a Ray Tune run of its own, on one Ray cluster),
    starting them in plan order (with `turns`, each when `_Turns` says). Ray places every study's trials on the free slots, so no slot
    idles at a study's end while another study has trials waiting, and the studies' start-up and
    closing overlap. A study that fails does not stop the others; the first failure (in plan
    order) is raised once all have ended. Ctrl+C stops every running study resumably and starts
    no further one (`seqrep.interrupts`)."""
    from seqrep.interrupts import INTERRUPTED, graceful_stop
    from seqrep.launch import run_study

    # a study waiting for slots the others hold is not a cluster short of resources
    for variable in ("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER"):
        os.environ.setdefault(variable, str(10 ** 9))
    waiting = queue.Queue()
    for p in plans:
        waiting.put(p)
    failures: dict[str, BaseException] = {}

    def work() -> None:
        while not INTERRUPTED.is_set():
            try:
                p = waiting.get_nowait()
            except queue.Empty:
                return
            if turns is not None and not turns.wait(p.name, INTERRUPTED):
                return
            # one write of line and newline: print's two writes interleave across the study threads
            print(f"seqrep: running study {p.name} ({p.trials} trials, {p.max_epochs} epochs)\n", end="", flush=True)
            try:
                run_study(p)
            except BaseException as err:  # noqa: BLE001 - raised in the main thread below
                failures[p.name] = err
                if not isinstance(err, KeyboardInterrupt):
                    print(f"seqrep: study {p.name} failed: {err}", file=sys.stderr, flush=True)
                continue
            finally:
                if turns is not None:
                    turns.end(p.name)
            if after is not None:
                after(p)

    with graceful_stop():
        threads = [threading.Thread(target=work, name=f"seqrep-studies-{i}", daemon=True)
                   for i in range(min(at_once, len(plans)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # a timed join, so that a signal reaches the main thread's handler
                thread.join(0.2)
    if INTERRUPTED.is_set() or any(isinstance(err, KeyboardInterrupt) for err in failures.values()):
        raise KeyboardInterrupt
    for p in plans:
        if p.name in failures:
            raise failures[p.name]


@contextlib.contextmanager
def _one_ray(plans: list[StudyPlan]):
    """One Ray session for all the studies (not one per study): a table's studies then share the
    cluster's start-up and its warm worker processes, which cost seconds per study."""
    if not plans:
        yield
        return
    from seqrep import cluster

    with cluster.joined(plans[0].options.address):
        yield


def _log_table(table: str, plans: list[StudyPlan], paths: tuple[Path, Path]) -> None:
    for p in plans:
        record = studydir.read_record(p.directory) or {}
        if not record.get("parent_run_id"):
            continue
        try:
            for path in paths:
                tracking.client(p.tracking_uri).log_artifact(record["parent_run_id"], str(path), "tables")
        except Exception as err:  # noqa: BLE001 - the table is on disk either way
            log.warning("could not log %s to MLflow: %s", table, err)


def reproduce(table: str, datasets: list[str] | None, options: StudyOptions, out_dir: Path,
              splits: int | None = None, repeats: int = 1, at_once: int = 0) -> tuple[Path, Path]:
    """Run the studies a thesis table needs (reusing identical finished ones) and write the table,
    its manifest (`<table>.json`: command, commit, date, wall time, the studies of every row) and
    its report.

    `splits`: for spaces with a grid over UCI splits (Table 8), run splits 0 .. splits-1.
    `repeats`: run each study with seeds seed .. seed + repeats - 1; the table shows mean ± std.
    `at_once`: how many of the studies run at the same time (0: all, started in turn; 1: one
    after another)."""
    options.validate()
    if flag_violation("--repeats", repeats):
        raise SeqrepError(f"--repeats {flag_violation('--repeats', repeats)}, got {repeats!r}")
    if flag_violation("--studies-at-once", at_once):
        raise SeqrepError(f"--studies-at-once {flag_violation('--studies-at-once', at_once)}, got {at_once!r}")
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    plans = _plans(table, datasets, options, splits, repeats)
    early = _EarlySections(table, out_dir)
    _run(plans, options.verbose, at_once, early)
    directories: dict[tuple[str, str], list[Path]] = {}
    for p in plans:
        directories.setdefault((p.space.name, p.dataset), []).append(p.directory)
    frame = tables.build(table, lambda space, dataset: directories.get((space, dataset)), datasets)
    md, csv = tables.write(table, frame, out_dir)
    manifest = tables.write_manifest(table, out_dir, {
        "table": table, "command": plans[0].record()["command"] if plans else "",
        "git_commit": plans[0].git_commit if plans else "", "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - clock, 1), "repeats": repeats, "seed": options.seed,
        # relative to the manifest's folder, so a table and its studies can move (or be committed) together
        "studies": {f"{space}|{dataset}": [os.path.relpath(d, Path(out_dir).resolve()) for d in dirs]
                    for (space, dataset), dirs in directories.items()},
        # where the trials ran: a study reused from an earlier run keeps the commit it ran at
        "study_commits": dict(collections.Counter((studydir.read_record(p.directory) or {}).get("git_commit", "")
                                                  for p in plans)),
    })
    from seqrep import report  # matplotlib and optuna: loaded when a report is written

    pages = report.table_report(table, out_dir, early.sections)
    _log_table(table, plans, (md, csv, manifest, *pages))
    return md, csv
