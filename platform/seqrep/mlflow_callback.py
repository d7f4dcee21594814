"""The Ray Tune callback that mirrors every trial of a study into an MLflow child run.

It runs on the driver, snapshots what it needs from a trial and hands the MLflow calls to the
single writer thread of `seqrep.tracking`, so the store has one writer and Ray Tune's loop never
waits on it. What a trial's result means (status, final metrics) is `seqrep.results`'s reading, the
same the Parquet summary uses. A cohort trial (`seqrep.cohorts`) is one child run per member: each
gets its own epochs from the cohort's results, is ended as soon as its final result arrives, and
gets its model and plots (its subfolder of the cohort's checkpoint) when the cohort ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from ray import tune

from seqrep import cohorts, metric_rows, results, studydir
from seqrep.method import Declaration
from seqrep.tracking import Writer, client, experiment_id, final_entries, numeric_metrics


def _param(value: Any) -> str:
    return "null" if value is None else str(value)


class MlflowTrialCallback(tune.Callback):
    """Ray Tune callback (runs on the driver) that mirrors every trial into a child run.

    The callback only snapshots what it needs from a trial and hands the MLflow calls to a single
    writer thread, so the store still has one writer and Ray Tune's loop never waits on it.
    """

    def __init__(self, uri: str, study: str, parent_run_id: str, study_dir: Path, tags: Mapping[str, str],
                 declaration: Declaration = Declaration(), grouped: list[list[dict[str, Any]]] | None = None):
        self.uri, self.study, self.parent_run_id = uri, study, parent_run_id
        self.grouped = grouped  # the member configs of every cohort, when the study trains cohorts
        self.declaration = declaration
        self.study_dir = Path(study_dir)
        self.tags = dict(tags)
        self._client = None
        self._runs: dict[str, str] | None = None
        self._writer: Writer | None = None

    def __getstate__(self):  # Tuner pickles its callbacks; client and thread stay behind
        state = dict(self.__dict__)
        state["_client"], state["_runs"], state["_writer"] = None, None, None
        return state

    @property
    def c(self):
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    @property
    def runs(self) -> dict[str, str]:
        if self._runs is None:
            self._runs = studydir.load_runs(self.study_dir)
        return self._runs

    def _submit(self, what: str, fn, *args) -> None:
        if self._writer is None:
            self._writer = Writer(self.study)
        self._writer.submit(what, fn, *args)

    def on_experiment_end(self, trials, **info):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def members(self, trial) -> list[tuple[str, dict[str, Any]]] | None:
        """(member trial id, config) of every member of a cohort trial; None for a solo trial."""
        config = dict(trial.config)
        if self.grouped is None or set(config) != {"cohort"}:
            return None
        return [(cohorts.member_id(trial.trial_id, k), c) for k, c in enumerate(self.grouped[int(config["cohort"])])]

    def run_id(self, trial_id: str, config: Mapping[str, Any]) -> str:
        """The trial's child run: the one it already has (resumed study) or a new one."""
        run_id = self.runs.get(trial_id)
        if run_id is None:
            from mlflow.entities import Param

            tags = {"mlflow.parentRunId": self.parent_run_id, "seqrep.trial_id": trial_id, **self.tags}
            if cohorts.MEMBER_SEPARATOR in trial_id:
                tags["seqrep.cohort"] = trial_id.rsplit(cohorts.MEMBER_SEPARATOR, 1)[0]
            run = self.c.create_run(experiment_id(self.uri, self.study), run_name=trial_id, tags=tags)
            run_id = run.info.run_id
            self.runs[trial_id] = run_id
            studydir.save_runs(self.study_dir, self.runs)
            params = [Param(k, _param(v)) for k, v in sorted(config.items())]
            for i in range(0, len(params), 100):
                self.c.log_batch(run_id, params=params[i:i + 100])
        return run_id

    def _start(self, trial_id: str, config: Mapping[str, Any]) -> None:
        known = trial_id in self.runs
        run_id = self.run_id(trial_id, config)
        # a resumed trial's run is reopened, but not a cohort member's that finished in an earlier
        # attempt: the resumed cohort does not send its final result again
        if known and "seqrep.status" not in self.c.get_run(run_id).data.tags:
            self.c.update_run(run_id, status="RUNNING")

    def on_trial_start(self, iteration, trials, trial, **info):
        for trial_id, config in self.members(trial) or [(trial.trial_id, dict(trial.config))]:
            self._submit("run start", self._start, trial_id, config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        members = self.members(trial)
        if members is None:
            self._submit_epochs(trial.trial_id, dict(trial.config), result)
            return
        for entry in result.get(results.MEMBERS_KEY) or []:
            trial_id, config = members[int(entry["member"])]
            self._submit_epochs(trial_id, config, entry)
            if results.STATUS_KEY in entry:
                final = dict(entry, node_ip=result.get("node_ip"))
                self._submit("final results", self._finish, trial_id, config, final, None, None, "FINISHED")

    def _submit_epochs(self, trial_id: str, config: dict[str, Any], result: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for row in result.get("history") or []:
            step = int(row.get("epoch", 0))
            metrics += [Metric(k, v, now, step) for k, v in numeric_metrics(row).items() if k != "epoch"]
        if metrics:
            self._submit("metrics", self._log_metrics, trial_id, config, metrics)

    def _log_metrics(self, trial_id, config, metrics) -> None:
        metric_rows.log_metrics(self.c, self.run_id(trial_id, config), metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._submit_finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit_finish(trial, "FAILED")

    def _submit_finish(self, trial, run_status: str) -> None:
        checkpoint = trial.checkpoint
        members = self.members(trial)
        if members is not None:
            self._submit("cohort end", self._end_cohort, members, checkpoint.path if checkpoint is not None else None,
                         getattr(trial, "path", None), run_status)
            return
        self._submit("final results", self._finish, trial.trial_id, dict(trial.config),
                     dict(trial.last_result or {}), checkpoint.path if checkpoint is not None else None,
                     getattr(trial, "path", None), run_status)

    def _finish(self, trial_id, config, result, checkpoint_path, trial_path, run_status: str) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self.run_id(trial_id, config)
        finished = results.STATUS_KEY in result
        tags = {"seqrep.status": results.status(result if finished else None, run_status == "FAILED"),
                "seqrep.node": str(result.get("node_ip", ""))}
        if run_status == "FAILED":
            tags["seqrep.error"] = results.error_message(trial_path)[:5000]
        metrics = []
        if finished:
            now = int(time.time() * 1000)
            values, step = final_entries(result, self.declaration)
            metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.c.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        if finished and checkpoint_path and os.path.isdir(checkpoint_path):
            self.c.log_artifacts(run_id, checkpoint_path)
        self.c.set_terminated(run_id, run_status)

    def _end_cohort(self, members, checkpoint_path, trial_path, run_status: str) -> None:
        """Each member's model and plots; a member the cohort's failure left unfinished ends FAILED."""
        from mlflow.entities import RunTag

        for k, (trial_id, config) in enumerate(members):
            run_id = self.run_id(trial_id, config)
            finished = "seqrep.status" in self.c.get_run(run_id).data.tags
            folder = os.path.join(checkpoint_path, cohorts.member_folder(k)) if checkpoint_path else None
            if finished and folder and os.path.isfile(os.path.join(folder, results.MODEL_FILE)):
                self.c.log_artifacts(run_id, folder)
            if not finished:
                error = results.error_message(trial_path)[:5000] if run_status == "FAILED" else ""
                tags = [RunTag("seqrep.status", "errored" if run_status == "FAILED" else "stopped"),
                        RunTag("seqrep.error", error)]
                self.c.log_batch(run_id, tags=tags)
                self.c.set_terminated(run_id, run_status if run_status == "FAILED" else "KILLED")
