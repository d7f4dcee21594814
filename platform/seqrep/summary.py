"""A study directory -> `trials.parquet`, one row per trial, written atomically.

It reads only files: seqrep's `study.json` and `mlflow_runs.json`, and Ray Tune's per-trial folder
`ray/<trial_id>/` with `params.json` (the config), `result.json` (one JSON line per report; each line's
`history` holds the epochs it covers) and `error.txt` (a failed trial's traceback). A trial's
folder is reused when it is restored, so a trial is one row however often it was restarted.

Status: `completed` or `diverged` when the trial finished (its last result says which); `errored`
when Ray recorded an error and the trial never finished; `stopped` otherwise (an early-stopping
scheduler ended it, or the driver died before it finished).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqrep.errors import SeqrepError

SUMMARY_FILE = "trials.parquet"
RAY_DIR = "ray"  # Ray Tune's experiment folder inside a study folder
STATUSES = ("completed", "diverged", "errored", "stopped")
IDENTITY_COLUMNS = ["study", "trial_id", "method", "dataset", "space", "seed", "trial_seed", "status", "error"]
TAIL_COLUMNS = ["best_epoch", "epochs", "wall_s", "cpus", "gpus", "node", "mlflow_run_id"]


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _results(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed driver; the rest of the file still counts


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a < b if mode == "min" else a > b)


def _is_metric(key: str) -> bool:
    """A final metric kept in the summary: valid_*, test_*, and train_* measured at the best epoch
    (Table 9's train_nca_prob); not the last epoch's train_loss, which is in the history."""
    return key.startswith(("valid_", "test_")) or (key.startswith("train_") and key != "train_loss")


def trial_row(trial_dir: Path, study: Mapping[str, Any], runs: Mapping[str, str]) -> dict[str, Any]:
    """One trial folder -> one summary row (without the study-wide identity columns)."""
    from seqrep.session import trial_seed
    from seqrep.tracking import last_error_line

    trial_id = trial_dir.name
    config = json.loads((trial_dir / "params.json").read_text()) if (trial_dir / "params.json").exists() else {}
    results = list(_results(trial_dir / "result.json"))
    epochs: dict[int, dict[str, Any]] = {}
    for result in results:
        for row in result.get("history") or []:
            epochs[int(row["epoch"])] = row  # a restarted trial repeats epochs: the latest wins
    final = next((r for r in reversed(results) if "seqrep_status" in r), None)
    last = results[-1] if results else {}
    error_file = trial_dir / "error.txt"

    metric, mode = study["metric"], study["mode"]
    row: dict[str, Any] = {"trial_id": trial_id, "trial_seed": trial_seed(int(study["seed"]), config)}
    if final is not None:
        row["status"], row["error"] = final["seqrep_status"], None
        row["best_epoch"] = int(final.get("best_epoch") or 0) or None
        row.update({k: v for k, v in final.items() if _is_metric(k)})
        if row["best_epoch"] is None:  # diverged before any finite epoch: nothing to select
            row.update({k: math.nan for k in row if _is_metric(k)})
    else:
        if error_file.exists():
            row["status"], row["error"] = "errored", last_error_line(error_file.read_text())
        else:
            row["status"], row["error"] = "stopped", None
        best, best_row = None, None
        for epoch in sorted(epochs):
            value = epochs[epoch].get(metric)
            if _finite(value) and _better(value, best, mode):
                best, best_row = value, epochs[epoch]
        row["best_epoch"] = int(best_row["epoch"]) if best_row else None
        if best_row:
            row.update({k: v for k, v in best_row.items() if k.startswith("valid_")})
    row["epochs"] = max(epochs) if epochs else 0
    row["wall_s"] = float(last.get("time_total_s", math.nan)) if last else math.nan
    row["node"] = last.get("node_ip")
    row["mlflow_run_id"] = runs.get(trial_id)
    row["config"] = config
    return row


def collect(study_dir: Path) -> pd.DataFrame:
    study_dir = Path(study_dir)
    record_path = study_dir / "study.json"
    if not record_path.exists():
        raise SeqrepError(f"{study_dir} is not a seqrep study (no study.json); "
                          "give the folder `seqrep search` wrote, e.g. results/studies/<name>")
    study = json.loads(record_path.read_text())
    runs_path = study_dir / "mlflow_runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    ray_dir = study_dir / RAY_DIR
    trial_dirs = sorted(d for d in ray_dir.iterdir() if d.is_dir() and (d / "params.json").exists()) \
        if ray_dir.is_dir() else []
    rows = [trial_row(d, study, runs) for d in trial_dirs]
    config_keys = sorted({k for r in rows for k in r["config"]})
    metric_keys = sorted({k for r in rows for k in r if _is_metric(k)},
                         key=lambda k: (not k.startswith("valid_"), k))
    records = []
    for r in rows:
        record = {
            "study": study["name"],
            "trial_id": r["trial_id"],
            "method": study["method"],
            "dataset": study["dataset"],
            "space": study["space"],
            "seed": int(study["seed"]),
            "trial_seed": r["trial_seed"],
            "status": r["status"],
            "error": r["error"],
        }
        record.update({f"config.{k}": r["config"].get(k) for k in config_keys})
        record.update({k: r.get(k, math.nan) for k in metric_keys})
        record.update({
            "best_epoch": r["best_epoch"],
            "epochs": r["epochs"],
            "wall_s": r["wall_s"],
            "cpus": float(study["cpus_per_trial"]),
            "gpus": float(study["gpus_per_trial"]),
            "node": r["node"],
            "mlflow_run_id": r["mlflow_run_id"],
        })
        records.append(record)
    columns = IDENTITY_COLUMNS + [f"config.{k}" for k in config_keys] + metric_keys + TAIL_COLUMNS
    return pd.DataFrame.from_records(records, columns=columns)


def _arrow_column(name: str, values: list[Any]) -> pa.Array:
    if name in ("best_epoch", "epochs", "seed", "trial_seed"):
        return pa.array(values, type=pa.int64())
    if _is_metric(name) or name in ("wall_s", "cpus", "gpus"):
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
    study_dir = Path(study_dir)
    table = to_table(collect(study_dir))
    out = study_dir / SUMMARY_FILE
    tmp = study_dir / f".{SUMMARY_FILE}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return out


def read(study_dir: Path) -> pd.DataFrame:
    path = Path(study_dir) / SUMMARY_FILE
    if not path.exists():
        raise SeqrepError(f"no {SUMMARY_FILE} in {study_dir}; run `seqrep summarize {study_dir}`")
    return pq.read_table(path).to_pandas()
