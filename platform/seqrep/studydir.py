"""The files of a study folder, named in one place, and the record `study.json`.

    <study>/study.json        what was run, by which command, at which commit (`read_record`)
    <study>/mlflow_runs.json  trial id -> MLflow child run id
    <study>/cohorts.json      the configs of each cohort, when the study trained cohorts
    <study>/trials.parquet    the summary, one row per trial
    <study>/.finished         present once the study ran to its end
    <study>/driver.lock       held by the driver that runs the study (`seqrep.locks`)
    <study>/driver.json       who that driver is: host, pid, start time, command
    <study>/ray/              Ray Tune's experiment: one folder per trial (`results.py` reads them)
    <study>/ray-state/        seqrep's whole copy of Ray Tune's run state (`seqrep.ray_state`)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from seqrep.paths import atomic_write

STUDY_FILE = "study.json"
RUNS_FILE = "mlflow_runs.json"
COHORTS_FILE = "cohorts.json"  # how a study's configs were grouped into cohorts (`seqrep.cohorts`)
SUMMARY_FILE = "trials.parquet"
FINISHED_FILE = ".finished"
RAY_DIR = "ray"  # Ray Tune's experiment folder inside a study folder
LOCK_FILE = "driver.lock"
OWNER_FILE = "driver.json"
LOCK_FILES = (LOCK_FILE, OWNER_FILE)  # a folder holding only these holds no study yet


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON, atomically."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_record(directory: Path) -> dict[str, Any] | None:
    """The study's `study.json`, or None when the folder holds no study."""
    path = Path(directory) / STUDY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_record(directory: Path, record: Mapping[str, Any]) -> None:
    write_json(Path(directory) / STUDY_FILE, dict(record))


def is_finished(directory: Path) -> bool:
    return (Path(directory) / SUMMARY_FILE).exists() and (Path(directory) / FINISHED_FILE).exists()


def finished_at(directory: Path) -> str | None:
    """When the study last finished (the finished mark's text), None while it is unfinished."""
    mark = Path(directory) / FINISHED_FILE
    return mark.read_text() if mark.exists() else None


def load_runs(directory: Path) -> dict[str, str]:
    """trial id -> MLflow child run id (empty before the first trial started)."""
    path = Path(directory) / RUNS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def save_runs(directory: Path, runs: Mapping[str, str]) -> None:
    write_json(Path(directory) / RUNS_FILE, dict(runs))


def trial_dirs(directory: Path) -> list[Path]:
    """Ray Tune's trial folders of the study (those that got as far as their params), sorted."""
    ray_dir = Path(directory) / RAY_DIR
    if not ray_dir.is_dir():
        return []
    return sorted(d for d in ray_dir.iterdir() if d.is_dir() and (d / "params.json").exists())
