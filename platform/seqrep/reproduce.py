"""`seqrep reproduce TABLE`: run the studies a thesis table needs, then rebuild the table.

Every study is planned (validated) before any runs; a finished study with the same identity is
reused instead of run again; data sets whose files are absent are named and skipped when the
whole table is asked for. The table itself is `seqrep.tables`'s business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import time
from pathlib import Path

from seqrep import data as seqrep_data
from seqrep import progress, spaces, studydir, tables, tracking
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


def _run(plans: list[StudyPlan], verbose: bool) -> None:
    """Run every study that cannot be reused, under one progress view of them all."""
    from seqrep.launch import run_study, runs  # Ray: imported when a study runs

    to_run = []
    for p in plans:
        if _reusable(p):
            print(f"seqrep: reusing the finished study {p.name} in {p.directory}", flush=True)
        else:
            to_run.append(p)
    view = progress.View(len(to_run), [runs(p) * p.max_epochs for p in to_run])
    with progress.showing(view) if not verbose and to_run else contextlib.nullcontext(), _one_ray(to_run):
        for p in to_run:
            print(f"seqrep: running study {p.name} ({p.trials} trials, {p.max_epochs} epochs)", flush=True)
            run_study(p)


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
              splits: int | None = None, repeats: int = 1) -> tuple[Path, Path]:
    """Run the studies a thesis table needs (reusing identical finished ones) and write the table,
    its manifest (`<table>.json`: command, commit, date, wall time, the studies of every row) and
    its report.

    `splits`: for spaces with a grid over UCI splits (Table 8), run splits 0 .. splits-1.
    `repeats`: run each study with seeds seed .. seed + repeats - 1; the table shows mean ± std."""
    options.validate()
    if flag_violation("--repeats", repeats):
        raise SeqrepError(f"--repeats {flag_violation('--repeats', repeats)}, got {repeats!r}")
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    plans = _plans(table, datasets, options, splits, repeats)
    _run(plans, options.verbose)
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
    })
    from seqrep import report  # matplotlib and optuna: loaded when a report is written

    pages = report.table_report(table, out_dir)
    _log_table(table, plans, (md, csv, manifest, *pages))
    return md, csv
