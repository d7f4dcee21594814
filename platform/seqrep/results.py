"""What a trial reported, decoded in one place for the MLflow mirror and the Parquet summary.

A trial (a `seqrep.method.Session` under Ray) sends results; each holds the epochs since the last
one in `history`, and the last one holds `seqrep_status` (`completed` or `diverged`) with the final
metrics: `valid_*` at the best epoch, `test_*` measured with the best-validation state, `best_epoch`,
and the training-set metrics the method declares (`Declaration.train_metrics`). Ray Tune keeps the
results as JSON lines in the trial folder's `result.json`, the config in `params.json` and a failed
trial's traceback in `error.txt`.

Status: `completed` / `diverged` when the trial finished (its last result says which); `errored`
when it raised and never finished; `stopped` otherwise (an early-stopping scheduler ended it, or
the driver died before it finished).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from seqrep.method import Declaration, is_finite

STATUS_KEY = "seqrep_status"
STATE_FILE, MODEL_FILE, CONFIG_FILE = "state.pt", "model.pt", "config.json"  # checkpoint files
RESULT_FILE, PARAMS_FILE, ERROR_FILE = "result.json", "params.json", "error.txt"  # Ray Tune's
STATUSES = ("completed", "diverged", "errored", "stopped")
SPLITS = ("valid_", "test_")


def trial_seed(study_seed: int, config: Mapping[str, Any]) -> int:
    """A trial's seed: a hash of the study seed and the trial's config (stable across restarts)."""
    blob = json.dumps({"seed": study_seed, "config": dict(config)}, sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "little") & 0x7FFFFFFF


def is_final_metric(key: str, declaration: Declaration) -> bool:
    """A metric of the selected state: `valid_*`, `test_*`, or a declared `train_*` (never the
    per-epoch `train_loss`, which belongs to the history)."""
    return key.startswith(SPLITS) or key in declaration.train_metrics


def final_metrics(result: Mapping[str, Any], declaration: Declaration) -> dict[str, float]:
    """The numeric final metrics of a finished trial's last result."""
    return {k: float(v) for k, v in result.items()
            if is_final_metric(k, declaration) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def status(final: Mapping[str, Any] | None, errored: bool) -> str:
    """The trial's status from its final result (None: it never finished) and whether it raised."""
    if final is not None and final.get(STATUS_KEY):
        return str(final[STATUS_KEY])
    return "errored" if errored else "stopped"


def last_error_line(text: str) -> str:
    """The line of a traceback that says what went wrong (not a `File ...` or caret line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~")) and ":" in line:
            return line
    return lines[-1] if lines else ""


def error_message(trial_dir: str | Path | None) -> str:
    """The last line of a failed trial's traceback (Ray keeps it in `error.txt` in the trial dir)."""
    path = Path(trial_dir) / ERROR_FILE if trial_dir else None
    if path is not None and path.exists():
        return last_error_line(path.read_text())
    return "unknown error (no error.txt in the trial folder)"


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a `result.json`; a line cut short by a killed driver is skipped."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


@dataclasses.dataclass
class TrialOutcome:
    """One trial folder, decoded: what the summary row and the MLflow child run say."""

    trial_id: str
    config: dict[str, Any]
    status: str
    error: str | None
    best_epoch: int | None
    epochs: int  # the highest epoch reached
    metrics: dict[str, float]  # final metrics (`is_final_metric`); NaN where nothing was selected
    wall_s: float
    node: str | None
    history: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)  # epoch -> report
    final: dict[str, Any] | None = dataclasses.field(default=None, repr=False)  # the last result, if finished


def _best_row(epochs: Mapping[int, Mapping[str, Any]], metric: str, mode: str) -> Mapping[str, Any] | None:
    """The epoch with the best finite selection metric (an unfinished trial's best so far)."""
    best, best_row = None, None
    for epoch in sorted(epochs):
        value = epochs[epoch].get(metric)
        if is_finite(value) and (best is None or (value < best if mode == "min" else value > best)):
            best, best_row = value, epochs[epoch]
    return best_row


def decode(trial_dir: Path, metric: str, mode: str, declaration: Declaration) -> TrialOutcome:
    """Read a trial folder (see the module docstring); a restarted trial repeats epochs, and the
    latest report of an epoch wins."""
    trial_dir = Path(trial_dir)
    params = trial_dir / PARAMS_FILE
    config = json.loads(params.read_text()) if params.exists() else {}
    results = list(read_results(trial_dir / RESULT_FILE))
    epochs: dict[int, dict[str, Any]] = {}
    for result in results:
        for row in result.get("history") or []:
            epochs[int(row["epoch"])] = row
    final = next((r for r in reversed(results) if STATUS_KEY in r), None)
    error_file = trial_dir / ERROR_FILE
    errored = final is None and error_file.exists()
    if final is not None:
        best_epoch = int(final.get("best_epoch") or 0) or None
        metrics = final_metrics(final, declaration)
        if best_epoch is None:  # diverged before any finite epoch: nothing to select
            metrics = {k: math.nan for k in metrics}
    else:
        best_row = _best_row(epochs, metric, mode)
        best_epoch = int(best_row["epoch"]) if best_row else None
        metrics = {k: float(v) for k, v in (best_row or {}).items() if k.startswith("valid_")}
    last = results[-1] if results else {}
    return TrialOutcome(
        trial_id=trial_dir.name,
        config=config,
        status=status(final, errored),
        error=last_error_line(error_file.read_text()) if errored else None,
        best_epoch=best_epoch,
        epochs=max(epochs) if epochs else 0,
        metrics=metrics,
        wall_s=float(last.get("time_total_s", math.nan)) if last else math.nan,
        node=last.get("node_ip"),
        history=epochs,
        final=final,
    )
