"""`seqrep sync`: a study whose trials got no MLflow runs (the store was down) and a new store are
filled from the study folder, with every epoch; a second sync writes nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from seqrep.cli import main

EPOCHS = 3


def children(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags], runs


def assert_complete(uri: str, study, frame: pd.DataFrame) -> None:
    client, kids, runs = children(uri, "table7-nn-toy-toy")
    assert len(kids) == len(frame) == 2 and len(runs) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["seqrep.trial_id"] for r in kids) == sorted(frame["trial_id"])
    for run in kids:
        row = frame.set_index("trial_id").loc[run.data.tags["seqrep.trial_id"]]
        for key in ("train_loss", "valid_nll", "valid_mse"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, EPOCHS + 1))
        assert run.data.metrics["test_nll"] == pytest.approx(row["test_nll"])
        assert run.data.metrics["best_valid_nll"] == pytest.approx(row["valid_nll"])
        assert run.data.tags["seqrep.status"] == "completed"
        assert int(run.data.params["hidden_units"]) == row["config.hidden_units"]
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model.pt", "config.json"}


@pytest.mark.integration
def test_sync_repairs_an_outage_and_fills_a_new_store_once(tmp_path, capsys, monkeypatch):
    from seqrep import launch, studies
    from seqrep.mlflow_callback import MlflowTrialCallback

    def store_down(self, trial_id, config):
        raise ConnectionError("tracking store down")

    monkeypatch.setattr(MlflowTrialCallback, "run_id", store_down)  # every child-run call fails
    uri, new_uri = f"sqlite:///{tmp_path}/m.db", f"sqlite:///{tmp_path}/team.db"
    options = studies.StudyOptions(trials=2, max_epochs=EPOCHS, seed=4, storage=str(tmp_path / "s"),
                                   tracking_uri=uri, command="test")
    out = launch.run_study(studies.plan("table7-nn-toy", "toy", options))
    study, frame = out.parent, pd.read_parquet(out)
    assert f"repair the store with `seqrep sync {study}`" in capsys.readouterr().err
    assert children(uri, "table7-nn-toy-toy")[1] == []  # the outage: no child runs at all
    monkeypatch.undo()

    assert main(["sync", str(study)]) == 0
    assert "2 runs created, 2 ended" in capsys.readouterr().out
    assert_complete(uri, study, frame)
    assert json.loads((study / "mlflow_runs.json").read_text()) == {
        r.data.tags["seqrep.trial_id"]: r.info.run_id for r in children(uri, "table7-nn-toy-toy")[1]}
    assert main(["sync", str(study)]) == 0
    assert capsys.readouterr().out == f"seqrep: {uri} already holds the study in {study}; nothing written\n"

    assert main(["sync", str(study), "--tracking-uri", new_uri]) == 0
    assert "3 runs created, 3 ended" in capsys.readouterr().out
    assert_complete(new_uri, study, frame)
    assert main(["sync", str(study), "--tracking-uri", new_uri]) == 0
    assert capsys.readouterr().out.endswith("nothing written\n")
    assert_complete(new_uri, study, frame)


@pytest.mark.integration
def test_repair_after_a_resume_ends_a_finished_trials_run_that_a_killed_driver_left_open(tmp_path):
    """What `--resume` runs at its end (`Syncer.repair`): a trial the study folder says finished,
    whose run a SIGKILLed driver left RUNNING without its status, is ended with its final metrics;
    the other run, complete, is left alone."""
    from seqrep import launch, studies, sync

    uri = f"sqlite:///{tmp_path}/m.db"
    options = studies.StudyOptions(trials=2, max_epochs=EPOCHS, seed=4, storage=str(tmp_path / "s"),
                                   tracking_uri=uri, command="test")
    out = launch.run_study(studies.plan("table7-nn-toy", "toy", options))
    study, frame = out.parent, pd.read_parquet(out)
    client, kids, _ = children(uri, "table7-nn-toy-toy")
    broken = kids[0].info.run_id
    client.update_run(broken, status="RUNNING")
    client.delete_tag(broken, "seqrep.status")

    writes = sync.Syncer(study, uri).repair()
    assert writes.runs_ended == 1 and writes.runs_created == 0
    assert_complete(uri, study, frame)
    assert sync.Syncer(study, uri).repair().total() == 0  # nothing left to write
