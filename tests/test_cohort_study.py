"""Cohort studies on a real local Ray cluster tracked in a real sqlite MLflow store: every config is
one Parquet row and one MLflow child run however the configs were grouped, the numbers equal the
same study's without cohorts, and a cohort whose worker dies resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from seqrep import cohorts, launch, spaces, studies, summary  # noqa: E402

from cohort_checks import assert_epochs_once_or_rerun_alike  # noqa: E402

pytestmark = pytest.mark.integration

SPACE = """name: nn-one-shape
method: mlp
source: "test: one network shape, searched rmsprop"
datasets: [toy]
metric: valid_nll
mode: min
trials: 6
max_epochs: {epochs}
fixed: {{hidden_layers: 1, hidden_units: 10, transfer: sigmoid, batch_size: 25}}
space:
  step_rate: {{loguniform: [1.0e-3, 1.0e-2]}}
  decay: {{uniform: [0.5, 0.99]}}
  momentum: {{uniform: [0.0, 0.9]}}
"""


def plan(tmp_path: Path, name: str, epochs: int, **kw) -> studies.StudyPlan:
    path = tmp_path / "nn-one-shape.yaml"
    path.write_text(SPACE.format(epochs=epochs))
    options = studies.StudyOptions(storage=str(tmp_path / "s"), tracking_uri=f"sqlite:///{tmp_path}/m.db", seed=3,
                                   name=name, command="seqrep search (test)", **kw)
    return studies.plan("nn-one-shape", "toy", options, space=spaces.load(path))


def children(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_cohorts_give_a_row_and_a_run_per_config_and_the_numbers_of_solo_trials(tmp_path, local_cluster, capsys):
    p = plan(tmp_path, "grouped", 30, cohort_size=4)
    grouped = summary.read(launch.run_study(p).parent)
    assert "seqrep: study grouped: 6 configs in 2 cohort(s) of sizes 3, 3 (members share " in capsys.readouterr().out
    assert len(list((p.directory / "ray").glob("*/params.json"))) == 2  # one Ray trial per cohort
    assert len(grouped) == 6 and grouped["trial_id"].is_unique
    assert sorted(grouped["cohort"].value_counts()) == [3, 3]
    assert set(grouped["status"]) == {"completed"} and (grouped["epochs"] == 30).all()
    assert len(cohorts.read(p.directory)) == 2
    client = MlflowClient(p.tracking_uri)
    runs = children(p.tracking_uri, "grouped")
    assert sorted(r.info.run_id for r in runs) == sorted(grouped["mlflow_run_id"])
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["seqrep.status"] == "completed"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_nll")]
        assert sorted(steps) == list(range(1, 31))
        assert "model.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}
        assert run.data.metrics["test_nll"] == pytest.approx(
            float(grouped.set_index("mlflow_run_id").loc[run.info.run_id, "test_nll"]), rel=1e-12)

    solo = summary.read(launch.run_study(plan(tmp_path, "solo", 30, cohort_size=1)).parent)
    assert solo["cohort"].isna().all() and len(solo) == 6
    config = [c for c in grouped.columns if c.startswith("config.")]
    both = grouped.merge(solo, on=["trial_seed", *config], suffixes=("", "_solo"))
    assert len(both) == 6  # the same six configs, each with the seed its solo trial had
    for column in ("valid_nll", "test_nll", "test_mse"):
        assert both[column].to_numpy() == pytest.approx(both[f"{column}_solo"].to_numpy(), rel=1e-3)
    assert (both["best_epoch"] == both["best_epoch_solo"]).all()
    assert (both["draw"] == both["draw_solo"]).all() and sorted(both["draw"]) == list(range(6))  # the same places


def _last_epoch(trial: Path) -> int:
    lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").exists() else []
    return max((json.loads(line).get("epoch", 0) for line in lines if line.strip()), default=0)


def test_a_cohort_whose_worker_is_killed_resumes_every_member_from_its_checkpoint(tmp_path, local_cluster, trial_workers):
    epochs = 3000
    p = plan(tmp_path, "killed", epochs, cohort_size=6, max_failures=2, report_interval_s=0.2, max_concurrent=1)
    killed: list[int] = []

    def kill_mid_way():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            trials = [d for d in p.directory.glob("ray/*") if any(d.glob("checkpoint_*"))]
            workers = trial_workers(os.getpid())
            if trials and workers and 0 < _last_epoch(trials[0]) < epochs // 2:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_mid_way, daemon=True)
    killer.start()
    frame = summary.read(launch.run_study(p).parent)
    killer.join(timeout=10)
    assert len(killed) == 1
    assert len(frame) == 6 and set(frame["status"]) == {"completed"} and (frame["epochs"] == epochs).all()
    (trial,) = p.directory.glob("ray/*/result.json")
    lines = [json.loads(line) for line in trial.read_text().splitlines()]
    assert sum(line["iterations_since_restore"] == 1 for line in lines) == 2  # restarted once
    for k in range(6):  # resumed from the checkpoint: each epoch once, or again with the same numbers
        assert_epochs_once_or_rerun_alike(
            [h for line in lines for m in line["members"] if m["member"] == k for h in m["history"]], epochs)
    client = MlflowClient(p.tracking_uri)
    for run in children(p.tracking_uri, "killed"):
        assert run.info.status == "FINISHED"
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "valid_nll")}
        assert steps == set(range(1, epochs + 1))


def test_a_cohort_study_whose_driver_is_sigkilled_resumes_with_its_grouping(tmp_path, killed_driver):
    """`--resume` after a SIGKILLed driver: the recorded grouping is kept, every member ends with
    one row and one FINISHED run holding each of its epochs. The kill is made to land while Ray Tune
    copied its run state into the study (the file cut short, as CI once saw): the resume takes
    seqrep's kept copy instead of letting Tune start the study over (`seqrep.ray_state`)."""
    import subprocess
    import sys

    # a cohort of three trains these 1 x 10 nets at ~1 ms an epoch on a fast core: 6000 epochs leave
    # seconds after the first checkpoint (at ~1 s) for the kill to land mid-way (2000 epochs and a
    # kill 3 s after it let the whole study end first on such a machine)
    epochs, uri = 6000, f"sqlite:///{tmp_path}/m.db"
    space = tmp_path / "nn-one-shape.yaml"
    space.write_text(SPACE.format(epochs=epochs))
    cmd = [sys.executable, "-m", "seqrep.cli", "search", str(space), "--dataset", "toy", "--seed", "3",
           "--cohort-size", "3", "--storage", str(tmp_path / "s"), "--tracking-uri", uri]
    study = tmp_path / "s" / "nn-one-shape-toy"
    killed_driver(cmd, study, after_s=1)
    grouping = cohorts.read(study)
    assert [len(c) for c in grouping] == [3, 3] and not (study / "trials.parquet").exists()
    [state] = (study / "ray").glob("experiment_state-*.json")
    state.write_bytes(state.read_bytes()[:1000])

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # the kill itself may have cut another state file short (Tune copies them one by one): listed too
    replaced = re.search(r"seqrep: study nn-one-shape-toy: Ray Tune's run state was cut short or not yet written when "
                         r"its driver was killed \((.+)\); resuming from the copy seqrep kept in ray-state/", done.stdout)
    assert replaced is not None and state.name in replaced.group(1).split(", "), done.stdout[-3000:]
    assert cohorts.read(study) == grouping
    frame = summary.read(study)
    assert len(frame) == 6 and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    assert (frame["epochs"] == epochs).all() and sorted(frame["cohort"].value_counts()) == [3, 3]
    client = MlflowClient(uri)
    runs = children(uri, "nn-one-shape-toy")
    assert sorted(r.info.run_id for r in runs) == sorted(frame["mlflow_run_id"])
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "valid_nll")}
        assert steps == set(range(1, epochs + 1))
    assert json.loads((study / "study.json").read_text())["attempts"] == 2
