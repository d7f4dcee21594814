"""`seqrep sync STUDY_DIR [--tracking-uri URI]`: make an MLflow store hold a study, from its folder.

Every result a study produced is on disk (`study.json`, Ray Tune's trial folders with every
epoch's metrics in `result.json`, the kept checkpoint with the model and the method's plots). A
store can lack some of it: trials that started while the tracking store was down got no child run,
or the store is a new one (a study moved to a team's server). `sync` replays the folder into the
store: the study's parent run, and one child run per trial with its params, every epoch's metrics
(step = epoch), its final metrics, tags and artifacts, ended with the trial's run status.

It is idempotent. A run is found again by its tags (`seqrep.role = study` on a parent that sync
made, the parent id that `study.json` records in the study's own store, `seqrep.trial_id` under the
parent), a child run that has ended with its `seqrep.status` is complete and is left alone, and a
run that a study left unfinished gets only the epochs it lacks. A second sync writes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from seqrep import cohorts, metric_rows, results, studydir, tracking
from seqrep.errors import SeqrepError
from seqrep.method import Declaration

RUN_STATUS = {"completed": "FINISHED", "diverged": "FINISHED", "errored": "FAILED", "stopped": "KILLED"}
ENDED = ("FINISHED", "FAILED", "KILLED")


@dataclasses.dataclass
class Writes:
    """What a sync wrote (all zero: the store already held the study)."""

    runs_created: int = 0
    runs_ended: int = 0
    metric_values: int = 0
    params: int = 0
    artifact_folders: int = 0

    def total(self) -> int:
        return sum(dataclasses.astuple(self))


def _epochs(outcome: results.TrialOutcome) -> dict[int, dict[str, float]]:
    """The trial's per-epoch metrics as its run holds them: epoch -> numeric values."""
    return {epoch: {k: v for k, v in tracking.numeric_metrics(row).items() if k != "epoch"}
            for epoch, row in outcome.history.items()}


class Syncer:
    """Replays one study folder into the store at `uri`."""

    def __init__(self, study_dir: Path, uri: str):
        self.dir = Path(study_dir)
        record = studydir.read_record(self.dir)
        if record is None:
            raise SeqrepError(f"{self.dir} is not a seqrep study (no {studydir.STUDY_FILE}); give the folder "
                              "`seqrep search` wrote, e.g. results/studies/<name>")
        self.record, self.uri = record, uri
        self.own_store = uri == record.get("tracking_uri")
        self.declaration = Declaration.from_json(record.get("declares"))
        self.writes = Writes()
        tracking.prepare_store(uri)
        self.c = tracking.client(uri)
        self.experiment = tracking.experiment_id(uri, record["name"])

    def _search(self, query: str) -> list:
        return self.c.search_runs([self.experiment], filter_string=query, max_results=1000)

    def parent(self) -> str:
        """The study's parent run in this store, made if there is none."""
        known = self.record.get("parent_run_id") if self.own_store else None
        if known:
            try:
                return self.c.get_run(known).info.run_id
            except Exception:  # noqa: BLE001 - deleted from the store: make one below
                pass
        found = self._search(f"tags.`seqrep.role` = 'study' and tags.`seqrep.created` = '{self.record.get('created', '')}'")
        if found:
            return found[0].info.run_id
        tags = {"seqrep.role": "study", "seqrep.created": str(self.record.get("created", "")),
                "seqrep.space": self.record["space"], "seqrep.source": self.record.get("source", ""),
                "seqrep.method": self.record["method"], "seqrep.dataset": self.record["dataset"],
                "seqrep.seed": str(self.record["seed"]), "mlflow.source.git.commit": self.record.get("git_commit", ""),
                "seqrep.command": self.record.get("command", "")}
        self.writes.runs_created += 1
        return tracking.start_parent(self.uri, self.record["name"], tags)

    def child(self, parent: str, trial_id: str, config: dict[str, Any]) -> tuple[Any | None, str]:
        """The trial's child run (None when there is none yet) and its id, made if needed."""
        found = self._search(f"tags.`seqrep.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent}'")
        if found:
            return found[0], found[0].info.run_id
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": parent, "seqrep.trial_id": trial_id, "seqrep.space": self.record["space"],
                "seqrep.dataset": self.record["dataset"], "seqrep.method": self.record["method"]}
        run_id = self.c.create_run(self.experiment, run_name=trial_id, tags=tags).info.run_id
        params = [Param(k, "null" if v is None else str(v)) for k, v in sorted(config.items())]
        for i in range(0, len(params), 100):
            self.c.log_batch(run_id, params=params[i:i + 100])
        self.writes.runs_created += 1
        self.writes.params += len(params)
        return None, run_id

    def _missing_epochs(self, run, run_id: str, epochs: dict[int, dict[str, float]]) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        keys = sorted({k for row in epochs.values() for k in row})
        have = {k: {m.step for m in self.c.get_metric_history(run_id, k)} for k in keys} if run is not None else {}
        return [Metric(k, v, now, epoch) for epoch, row in sorted(epochs.items()) for k, v in row.items()
                if epoch not in have.get(k, ())]

    def trial(self, parent: str, outcome: results.TrialOutcome, force: bool = False) -> None:
        run, run_id = self.child(parent, outcome.trial_id, outcome.config)
        if not force and run is not None and run.info.status in ENDED and "seqrep.status" in run.data.tags:
            return  # complete: the study (or an earlier sync) logged all of it
        from mlflow.entities import Metric, RunTag

        metrics = self._missing_epochs(run, run_id, _epochs(outcome))
        final = outcome.final
        if final is not None:
            values, step = tracking.final_entries(final, self.declaration)
            metrics += [Metric(k, v, int(time.time() * 1000), step) for k, v in values.items()]
        tags = {"seqrep.status": outcome.status, "seqrep.node": str(outcome.node or "")}
        if outcome.status == "errored":
            tags["seqrep.error"] = (outcome.error or "")[:5000]
        metric_rows.log_metrics(self.c, run_id, metrics)
        self.c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.writes.metric_values += len(metrics)
        checkpoint = cohorts.kept_folder(self.dir, outcome.trial_id, outcome.cohort)
        if final is not None and checkpoint is not None and not self.c.list_artifacts(run_id):
            self.c.log_artifacts(run_id, str(checkpoint))
            self.writes.artifact_folders += 1
        self.c.set_terminated(run_id, RUN_STATUS[outcome.status])
        self.writes.runs_ended += 1

    def repair(self) -> Writes:
        """After a resumed attempt: every epoch the study folder holds that a trial's run lacks (a
        killed driver's queued calls), and every finished trial's final metrics, status and end
        where its run does not show them (a member that finished just before the driver died).
        Runs of trials that have not finished are left as they are."""
        parent, runs = self.parent(), studydir.load_runs(self.dir)
        for outcome in results.decode_study(self.dir, self.record, self.declaration):
            run_id = runs.get(outcome.trial_id)
            if run_id is None:
                continue
            run = self.c.get_run(run_id)
            settled = run.info.status in ENDED and run.data.tags.get("seqrep.status") == outcome.status
            if outcome.final is not None and not settled:
                self.trial(parent, outcome, force=True)
                continue
            metrics = self._missing_epochs(run, run_id, _epochs(outcome))
            metric_rows.log_metrics(self.c, run_id, metrics)
            self.writes.metric_values += len(metrics)
        return self.writes

    def study(self) -> Writes:
        parent = self.parent()
        for outcome in results.decode_study(self.dir, self.record, self.declaration):
            self.trial(parent, outcome)
        if self.own_store:
            runs = {r.data.tags["seqrep.trial_id"]: r.info.run_id
                    for r in self._search(f"tags.`mlflow.parentRunId` = '{parent}'") if "seqrep.trial_id" in r.data.tags}
            if runs != studydir.load_runs(self.dir):
                studydir.save_runs(self.dir, runs)
        self._end_parent(parent)
        return self.writes

    def _end_parent(self, parent: str) -> None:
        if self.c.get_run(parent).info.status in ENDED:
            return
        summary_file = self.dir / studydir.SUMMARY_FILE
        artifacts = [summary_file] if summary_file.exists() else []
        status = "FINISHED" if studydir.is_finished(self.dir) else "KILLED"
        tracking.finish_parent(self.uri, parent, artifacts, status)
        self.writes.runs_ended += 1


def sync(study_dir: Path, uri: str | None = None) -> tuple[str, Writes]:
    """Replay `study_dir` into the store at `uri` (default: the study's own); returns the URI and
    what was written."""
    record = studydir.read_record(Path(study_dir)) or {}
    uri = uri or record.get("tracking_uri")
    if not uri:
        raise SeqrepError(f"{study_dir} records no tracking store; pass --tracking-uri")
    with tracking.impatient_http():
        return uri, Syncer(Path(study_dir), uri).study()
