"""What a trial reported, decoded in one place for the MLflow mirror and the Parquet summary.

A trial (a `seqrep.method.Session` under Ray) sends results; each holds the epochs since the last
one in `history`, and the last one holds `seqrep_status` (`completed` or `diverged`) with the final
metrics: `valid_*` at the best epoch, `test_*` measured with the best-validation state, `best_epoch`,
and the training-set metrics the method declares (`Declaration.train_metrics`). Ray Tune keeps the
results as JSON lines in the trial folder's `result.json`, the config in `params.json` and a failed
trial's traceback in `error.txt`. A cohort (`seqrep.cohorts`) is one Ray trial whose results hold
one entry per member under `members`, each shaped like a solo trial's result; `decode_study` turns
its folder into one outcome per member.

Status: `completed` / `diverged` when the trial finished (its last result says which); `errored`
when it raised and never finished; `stopped` otherwise (an early-stopping scheduler ended it, or
the driver died before it finished).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from seqrep.method import Declaration, is_finite

log = logging.getLogger(__name__)

STATUS_KEY = "seqrep_status"
MEMBERS_KEY = "members"  # a cohort's result: one entry per member (`seqrep.cohort_session`)
STATE_FILE, MODEL_FILE, CONFIG_FILE = "state.pt", "model.pt", "config.json"  # checkpoint files
RESULT_FILE, PARAMS_FILE, ERROR_FILE = "result.json", "params.json", "error.txt"  # Ray Tune's
PARAMS_PICKLE_FILE, EXPERIMENT_STATE_GLOB = "params.pkl", "experiment_state-*.json"  # Ray Tune's too
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
    cohort: str | None = None  # the cohort trial this trial was a member of (None: it ran alone)
    member: int | None = None  # its index in that cohort
    draw: int | None = None  # its config's place in the search's draws (`draw_index`)


def _best_row(epochs: Mapping[int, Mapping[str, Any]], metric: str, mode: str) -> Mapping[str, Any] | None:
    """The epoch with the best finite selection metric (an unfinished trial's best so far)."""
    best, best_row = None, None
    for epoch in sorted(epochs):
        value = epochs[epoch].get(metric)
        if is_finite(value) and (best is None or (value < best if mode == "min" else value > best)):
            best, best_row = value, epochs[epoch]
    return best_row


def _outcome(trial_id: str, config: dict[str, Any], reports: list[Mapping[str, Any]], last: Mapping[str, Any],
             error_text: str | None, metric: str, mode: str, declaration: Declaration) -> TrialOutcome:
    """A trial's outcome from its reports in order (each with the epochs since the one before in
    `history`; the last that holds `seqrep_status` is the final one); a restarted trial repeats
    epochs, and the latest report of an epoch wins."""
    epochs: dict[int, dict[str, Any]] = {}
    for report in reports:
        for row in report.get("history") or []:
            epochs[int(row["epoch"])] = row
    final = next((r for r in reversed(reports) if STATUS_KEY in r), None)
    errored = final is None and error_text is not None
    if final is not None:
        best_epoch = int(final.get("best_epoch") or 0) or None
        metrics = final_metrics(final, declaration)
        if best_epoch is None:  # diverged before any finite epoch: nothing to select
            metrics = {k: math.nan for k in metrics}
    else:
        best_row = _best_row(epochs, metric, mode)
        best_epoch = int(best_row["epoch"]) if best_row else None
        metrics = {k: float(v) for k, v in (best_row or {}).items() if k.startswith("valid_")}
    return TrialOutcome(
        trial_id=trial_id,
        config=config,
        status=status(final, errored),
        error=last_error_line(error_text) if errored else None,
        best_epoch=best_epoch,
        epochs=max(epochs) if epochs else 0,
        metrics=metrics,
        wall_s=float(last.get("time_total_s", math.nan)) if last else math.nan,
        node=last.get("node_ip"),
        history=epochs,
        final=final,
    )


def _read(trial_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    error_file = trial_dir / ERROR_FILE
    return list(read_results(trial_dir / RESULT_FILE)), (error_file.read_text() if error_file.exists() else None)


def state_configs(ray_dir: Path) -> dict[str, dict[str, Any]]:
    """Each trial's config as Ray Tune's latest experiment state holds it, by trial id (empty when
    there is no readable state)."""
    for path in sorted(Path(ray_dir).glob(EXPERIMENT_STATE_GLOB), reverse=True):
        try:
            trials = [json.loads(entry[0]) for entry in json.loads(path.read_text())["trial_data"]]
            return {str(t["trial_id"]): t["config"] for t in trials if isinstance(t.get("config"), dict)}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue  # a state cut short by a killed driver: the one before it
    return {}


def trial_config(trial_dir: Path, state: Callable[[], Mapping[str, dict[str, Any]]] | None = None) -> dict[str, Any] | None:
    """A trial folder's config: Ray Tune's `params.json`, else its `params.pkl`, else the config
    Ray's experiment state holds under the folder's name (the trial id; `state()` gives
    `state_configs`, by default of the folder's parent). A driver killed while Ray writes
    `params.json` leaves it empty. None: no config anywhere (a trial Ray never recorded)."""
    trial_dir = Path(trial_dir)
    try:
        config = json.loads((trial_dir / PARAMS_FILE).read_text())
        if isinstance(config, dict):
            return config
    except (OSError, ValueError):
        pass
    try:
        with open(trial_dir / PARAMS_PICKLE_FILE, "rb") as f:
            config = pickle.load(f)  # written by this study's own driver
        if isinstance(config, dict):
            return config
    except Exception:  # noqa: BLE001 - missing, empty or cut short: the experiment state next
        pass
    config = (state() if state is not None else state_configs(trial_dir.parent)).get(trial_dir.name)
    return dict(config) if config is not None else None


def decode(trial_dir: Path, metric: str, mode: str, declaration: Declaration,
           config: dict[str, Any] | None = None) -> TrialOutcome:
    """Read a trial folder (see the module docstring); `config`: its config, if already read."""
    trial_dir = Path(trial_dir)
    if config is None:
        config = trial_config(trial_dir) or {}
    reports, error_text = _read(trial_dir)
    return _outcome(trial_dir.name, config, reports, reports[-1] if reports else {}, error_text, metric, mode,
                    declaration)


def decode_cohort(trial_dir: Path, members: list[dict[str, Any]], metric: str, mode: str,
                  declaration: Declaration) -> list[TrialOutcome]:
    """Read a cohort's trial folder: one outcome per member (`members`: their configs), each with
    its own reports; wall time and node are the cohort's."""
    from seqrep.cohorts import member_id

    trial_dir = Path(trial_dir)
    reports, error_text = _read(trial_dir)
    last = reports[-1] if reports else {}
    outcomes = []
    for k, config in enumerate(members):
        own = [entry for report in reports for entry in report.get(MEMBERS_KEY) or [] if entry.get("member") == k]
        outcome = _outcome(member_id(trial_dir.name, k), dict(config), own, last, error_text, metric, mode,
                           declaration)
        outcome.cohort, outcome.member = trial_dir.name, k
        outcomes.append(outcome)
    return outcomes


def decode_study(study_dir: Path, record: Mapping[str, Any], declaration: Declaration) -> list[TrialOutcome]:
    """Every trial of a study folder, decoded: one outcome per solo trial, one per cohort member."""
    from seqrep import cohorts, studydir

    grouped, draws = cohorts.read(study_dir), cohorts.read_draws(study_dir)
    outcomes: list[TrialOutcome] = []
    state = functools.cache(lambda: state_configs(Path(study_dir) / studydir.RAY_DIR))  # read if needed, once
    for trial_dir in studydir.trial_dirs(study_dir):
        params = trial_config(trial_dir, state)
        if params is None:
            log.warning("%s: no config in params.json, params.pkl or Ray Tune's experiment state; a trial Ray "
                        "never recorded (its driver was killed as it started), left out", trial_dir)
            continue
        if grouped is not None and set(params) == {"cohort"}:
            c = int(params["cohort"])
            outcomes += [dataclasses.replace(m, draw=draws[c][m.member] if draws else None)
                         for m in decode_cohort(trial_dir, grouped[c], record["metric"], record["mode"], declaration)]
        else:
            outcome = decode(trial_dir, record["metric"], record["mode"], declaration, params)
            outcomes.append(dataclasses.replace(outcome, draw=draw_index(trial_dir.name)))
    return outcomes


def draw_index(trial_id: str) -> int | None:
    """A solo trial's place in its search's draws: Ray Tune numbers a study's trials in the order it
    draws their configs (`<experiment>_00007` is the eighth); None for another name."""
    number = trial_id.rpartition("_")[2]
    return int(number) if number.isdigit() else None
