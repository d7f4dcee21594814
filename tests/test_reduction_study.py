"""Sequence reduction through the platform (Ray Tune + MLflow + Parquet): Table 9's columns, the
improved-rule column, the kept test embeddings and the report's t-SNE map of the selected trial, on
a small generated set in the UCR layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from seqrep import cohorts, launch, report, studies, studydir, summary, tables

sys.path.insert(0, str(Path(__file__).parent))
from test_sequence_reduction import toy_rows, write_ucr  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_table9_nca_study_reports_the_table_columns(tmp_path):
    # the ramps stand in for SyntheticControl: the space lists the thesis's UCR sets by name
    write_ucr(tmp_path / "data", "SyntheticControl", toy_rows(20, 10, 0), toy_rows(20, 10, 1))
    o = studies.StudyOptions(trials=2, max_epochs=2, seed=3, data_dir=str(tmp_path / "data"),
                            storage=str(tmp_path / "studies"), tracking_uri=f"sqlite:///{tmp_path}/m.db",
                            command="seqrep search (test)")
    p = studies.plan("table9-nca", "ucr-syntheticcontrol", o)
    frame = summary.read(launch.run_study(p).parent)
    assert len(frame) == 2 and frame["status"].tolist() == ["completed"] * 2
    for column in ("valid_error", "valid_nca_prob", "valid_improved", "valid_initial_error", "test_error",
                   "test_nca_prob", "test_1nn_accuracy", "train_nca_prob", "config.pooling", "config.transfer"):
        assert frame[column].notna().all(), column
    assert "train_loss" not in frame
    assert set(frame["valid_improved"]) <= {0.0, 1.0}
    assert (frame["test_1nn_accuracy"] - (1 - frame["test_error"])).abs().max() < 1e-12
    client = MlflowClient(o.tracking_uri)
    for run_id in frame["mlflow_run_id"]:
        assert "embeddings.npz" in {a.path for a in client.list_artifacts(run_id)}
    for trial_id in frame["trial_id"]:  # each trial's kept folder in the Ray experiment holds them
        assert (cohorts.kept_folder(p.directory, trial_id) / report.EMBEDDINGS_FILE).is_file()
    # the report's t-SNE map is the table's pick's (none here when no trial improved on its untrained net)
    best = tables.best_trial(frame, "valid_error", "min", ["valid_improved"])
    selected = report.selected_embeddings(p.directory, studydir.read_record(p.directory), frame)
    assert (selected and selected[0]) == (best["trial_id"] if best is not None else None)
    table = tables.build("table9", lambda space, dataset: p.directory, ["ucr-syntheticcontrol"])
    assert table["metric"].tolist() == ["train_nca_prob", "test_nca_prob", "test_1nn_accuracy", "test_1nn_accuracy"]
