"""A study directory -> `trials.parquet`, one row per trial, written atomically.

It reads only files: the study's record (`studydir`), the trial -> MLflow run map, and Ray Tune's
per-trial folders, each decoded by `seqrep.results.decode_study` (the same reading the MLflow
mirror uses; a cohort's folder gives one row per member). A trial's folder is reused when it is restored, so a trial is one row however often it was
restarted. Importing this module loads neither Ray nor torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqrep import results, studydir
from seqrep.errors import SeqrepError
from seqrep.method import Declaration
from seqrep.paths import atomic_write
from seqrep.studydir import SUMMARY_FILE

IDENTITY_COLUMNS = ["study", "trial_id", "method", "dataset", "space", "seed", "trial_seed", "draw", "status",
                    "error"]
TAIL_COLUMNS = ["best_epoch", "epochs", "wall_s", "cpus", "gpus", "node", "mlflow_run_id", "cohort"]
INT_COLUMNS = ("best_epoch", "epochs", "seed", "trial_seed", "draw")
FLOAT_COLUMNS = ("wall_s", "cpus", "gpus")


def _record(study: dict[str, Any], outcome: results.TrialOutcome, runs: dict[str, str],
            config_keys: list[str], metric_keys: list[str]) -> dict[str, Any]:
    record = {
        "study": study["name"],
        "trial_id": outcome.trial_id,
        "method": study["method"],
        "dataset": study["dataset"],
        "space": study["space"],
        "seed": int(study["seed"]),
        "trial_seed": results.trial_seed(int(study["seed"]), outcome.config),
        "draw": outcome.draw,
        "status": outcome.status,
        "error": outcome.error,
    }
    record.update({f"config.{k}": outcome.config.get(k) for k in config_keys})
    record.update({k: outcome.metrics.get(k, math.nan) for k in metric_keys})
    record.update({
        "best_epoch": outcome.best_epoch,
        "epochs": outcome.epochs,
        "wall_s": outcome.wall_s,
        "cpus": float(study["cpus_per_trial"]),
        "gpus": float(study["gpus_per_trial"]),
        "node": outcome.node,
        "mlflow_run_id": runs.get(outcome.trial_id),
        "cohort": outcome.cohort,
    })
    return record


def collect(study_dir: Path) -> pd.DataFrame:
    study_dir = Path(study_dir)
    study = studydir.read_record(study_dir)
    if study is None:
        raise SeqrepError(f"{study_dir} is not a seqrep study (no {studydir.STUDY_FILE}); "
                          "give the folder `seqrep search` wrote, e.g. results/studies/<name>")
    declaration = Declaration.from_json(study.get("declares"))
    runs = studydir.load_runs(study_dir)
    outcomes = results.decode_study(study_dir, study, declaration)
    config_keys = sorted({k for o in outcomes for k in o.config})
    metric_keys = sorted({k for o in outcomes for k in o.metrics}, key=lambda k: (not k.startswith("valid_"), k))
    records = [_record(study, o, runs, config_keys, metric_keys) for o in outcomes]
    columns = IDENTITY_COLUMNS + [f"config.{k}" for k in config_keys] + metric_keys + TAIL_COLUMNS
    return pd.DataFrame.from_records(records, columns=columns)


def _is_metric_column(name: str) -> bool:
    return name.startswith(("valid_", "test_", "train_"))


def _arrow_column(name: str, values: list[Any]) -> pa.Array:
    if name in INT_COLUMNS:
        return pa.array(values, type=pa.int64())
    if _is_metric_column(name) or name in FLOAT_COLUMNS:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if name.startswith("config."):
        try:  # a typed column when the values share a type (null allowed), else text
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def to_table(frame: pd.DataFrame) -> pa.Table:
    columns = {name: _arrow_column(name, frame[name].astype(object).where(frame[name].notna(), None).tolist())
               for name in frame.columns}
    return pa.table(columns)


def write(study_dir: Path) -> Path:
    """Write `<study_dir>/trials.parquet` (to a temporary name, then renamed) and return its path."""
    table = to_table(collect(Path(study_dir)))
    out = Path(study_dir) / SUMMARY_FILE
    atomic_write(out, lambda tmp: pq.write_table(table, tmp))
    return out


def read(study_dir: Path) -> pd.DataFrame:
    path = Path(study_dir) / SUMMARY_FILE
    if not path.exists():
        raise SeqrepError(f"no {SUMMARY_FILE} in {study_dir}; run `seqrep summarize {study_dir}`")
    return pq.read_table(path).to_pandas()
