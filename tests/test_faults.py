"""Faults a cluster study must survive: lost nodes, a killed driver, a dead tracking store, bad data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from seqrep.cli import main

from cohort_checks import assert_epochs_once_or_rerun_alike


def test_an_unreachable_tracking_server_fails_fast_and_creates_nothing(capsys, tmp_path):
    start = time.monotonic()
    code = main(["search", "table7-nn-toy", "--dataset", "toy", "--trials", "1", "--storage", str(tmp_path / "s"),
                 "--tracking-uri", "http://127.0.0.1:9"])  # port 9 (discard): nothing listens
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - start < 60
    assert err.startswith("seqrep: error: cannot reach the MLflow tracking store http://127.0.0.1:9: ")
    assert err.rstrip().endswith("check --tracking-uri / MLFLOW_TRACKING_URI")
    assert not (tmp_path / "s").exists()


def test_the_tracking_writer_pauses_while_the_store_is_down_and_recovers():
    from seqrep.tracking import Writer as _Writer

    calls = {"fail": 0, "ok": 0}

    def failing():
        calls["fail"] += 1
        raise ConnectionError("store down")

    def working():
        calls["ok"] += 1

    writer = _Writer("test", tries=3, backoff_s=0.0, pause_s=0.3)
    writer.submit("a", failing)  # 3 tries, then the store counts as down
    writer.submit("b", working)  # skipped: within the pause
    writer.queue.join()
    assert calls == {"fail": 3, "ok": 0} and writer.skipped == 1
    time.sleep(0.35)
    writer.submit("c", working)  # one probe after the pause: it works, tracking resumes
    writer.submit("d", working)
    writer.close()
    assert calls == {"fail": 3, "ok": 2} and writer.down_until == 0.0


def test_a_corrupt_data_file_is_refused_naming_the_file(capsys, tmp_path):
    data = tmp_path / "data" / "polyphonic"
    data.mkdir(parents=True)
    (data / "JSB_Chorales.pickle").write_bytes(b"\x80\x02}q\x00garbage")
    code = main(["search", "table1-fd-rnn", "--dataset", "jsb", "--trials", "1", "--data-dir", str(tmp_path / "data"),
                 "--storage", str(tmp_path / "s"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2 and str(data / "JSB_Chorales.pickle") in err and "sha256" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.integration
def test_a_driver_killed_with_sigkill_resumes_to_exact_counts(tmp_path, killed_driver):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [sys.executable, "-m", "seqrep.cli", "search", "table7-dn-toy", "--dataset", "toy", "--trials", "4",
           "--max-epochs", "2500", "--seed", "5", "--storage", str(tmp_path / "s"), "--tracking-uri", uri]
    study = tmp_path / "s" / "table7-dn-toy-toy"
    killed_driver(cmd, study, after_s=2)
    assert not (study / "trials.parquet").exists()  # the driver had no chance to write anything at the end

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(study / "trials.parquet")
    assert len(frame) == 4 and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("table7-dn-toy-toy").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 5 and len(children) == 4
    assert [r.info.status for r in runs] == ["FINISHED"] * 5
    assert sorted(c.info.run_id for c in children) == sorted(frame["mlflow_run_id"])
    assert json.loads((study / "study.json").read_text())["attempts"] == 2


@pytest.mark.integration
def test_every_trial_completes_when_a_worker_node_is_lost(tmp_path):
    """A head and two workers with logical GPUs; one worker is removed while trials run on it."""
    import ray
    from ray.cluster_utils import Cluster

    from seqrep import launch, studies, summary

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        options = studies.StudyOptions(trials=4, max_epochs=1500, seed=2, storage=str(tmp_path / "s"),
                                      tracking_uri=f"sqlite:///{tmp_path}/m.db", cpus_per_trial=0.5,
                                      gpus_per_trial=0.5, max_failures=3, command="test", report_interval_s=0.2)
        p = studies.plan("table7-nn-toy", "toy", options)

        def remove_a_worker():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if len(list(p.directory.glob("ray/*/checkpoint_*"))) >= 2:
                    cluster.remove_node(workers[0])
                    return
                time.sleep(0.2)

        remover = threading.Thread(target=remove_a_worker, daemon=True)
        remover.start()
        frame = summary.read(launch.run_study(p).parent)
        remover.join(timeout=10)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(frame) == 4 and frame["trial_id"].is_unique
    assert set(frame["status"]) == {"completed"} and (frame["epochs"] == 1500).all()
    assert (frame["gpus"] == 0.5).all()


def test_node_types_the_autoscaler_can_start_count_as_capacity(tmp_path, monkeypatch):
    from seqrep import cluster

    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("head_node_type: head\navailable_node_types:\n"
                      "  head: {resources: {CPU: 8}, max_workers: 0}\n"
                      "  gpu: {resources: {CPU: 4, GPU: 1}, min_workers: 0, max_workers: 4}\n"
                      "  idle: {resources: {CPU: 64, GPU: 8}, max_workers: 0}\n")
    monkeypatch.setattr(cluster, "AUTOSCALER_CONFIG", config)
    assert cluster._autoscaled_node_types() == {"head": {"CPU": 8}, "gpu": {"CPU": 4, "GPU": 1}}
    monkeypatch.setattr(cluster, "AUTOSCALER_CONFIG", tmp_path / "absent.yaml")
    assert cluster._autoscaled_node_types() == {}


EPOCHS = 4000  # long enough (a few seconds per toy trial) that the kill lands while both trials train


def _last_epoch(trial_dir: Path) -> int:
    """The latest epoch a trial has reported (0 before its first report)."""
    lines = (trial_dir / "result.json").read_text().splitlines() if (trial_dir / "result.json").exists() else []
    try:
        return int(json.loads(lines[-1]).get("epoch", 0)) if lines else 0
    except ValueError:  # a line being written
        return 0


@pytest.mark.integration
def test_a_trial_whose_worker_is_sigkilled_resumes_from_its_checkpoint(tmp_path, trial_workers):
    """The node survives, the trial's worker process does not: Ray Tune restarts the trial from its
    latest registered checkpoint, so every trial ends with one row, one finished run and each epoch
    once (or, after the restored checkpoint, again with the same numbers)."""
    import ray
    from mlflow.tracking import MlflowClient

    from seqrep import launch, studies, summary

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    killed: list[int] = []
    try:
        options = studies.StudyOptions(trials=2, max_epochs=EPOCHS, seed=4, storage=str(tmp_path / "s"),
                                      tracking_uri=f"sqlite:///{tmp_path}/m.db", max_failures=2, command="test",
                                      report_interval_s=0.2)
        p = studies.plan("table7-nn-toy", "toy", options)

        def both_trials_mid_way() -> bool:
            """Both trials running with a checkpoint and well before their end: the kill hits a trial."""
            last = [_last_epoch(d) for d in p.directory.glob("ray/*") if any(d.glob("checkpoint_*"))]
            return len(last) == 2 and all(0 < e < EPOCHS // 2 for e in last)

        def kill_a_worker():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                workers = trial_workers(os.getpid())
                if workers and both_trials_mid_way():
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
                time.sleep(0.2)

        killer = threading.Thread(target=kill_a_worker, daemon=True)
        killer.start()
        frame = summary.read(launch.run_study(p).parent)
        killer.join(timeout=10)
    finally:
        ray.shutdown()
    assert len(killed) == 1
    assert len(frame) == 2 and frame["trial_id"].is_unique
    assert set(frame["status"]) == {"completed"} and (frame["epochs"] == EPOCHS).all()
    restarted = 0
    for trial in p.directory.glob("ray/*/result.json"):
        history = [h for line in trial.read_text().splitlines() for h in json.loads(line).get("history", [])]
        assert_epochs_once_or_rerun_alike(history, EPOCHS)  # resumed from its checkpoint
        starts = sum(json.loads(line)["iterations_since_restore"] == 1 for line in trial.read_text().splitlines())
        restarted += starts - 1
    assert restarted == 1  # the killed trial was restarted once, from its checkpoint
    client = MlflowClient(options.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(p.name).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    for child in (r for r in runs if "mlflow.parentRunId" in r.data.tags):
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "valid_nll")]
        assert sorted(set(steps)) == list(range(1, EPOCHS + 1))


@pytest.mark.integration
def test_a_second_driver_is_refused_and_sigterm_stops_the_first_resumably(tmp_path, kill_session):
    """While a study runs, a second `search` of it exits 2 at once, naming the owner; SIGTERM (a
    scheduler pre-empting the driver) stops the first as Ctrl+C does; --resume finishes it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy", "--trials", "2",
           "--max-epochs", "2000", "--seed", "3", "--storage", str(tmp_path / "s"), "--tracking-uri", uri,
           "--max-concurrent", "1"]
    study = tmp_path / "s" / "table7-nn-toy-toy"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(study.glob("ray/*/checkpoint_*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-3000:]
        assert second.stderr.startswith(f"seqrep: error: study 'table7-nn-toy-toy' in {study} is being run by "
                                        f"another driver (pid {proc.pid} on host ")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 143, err[-3000:]
    assert "seqrep: stopped by SIGTERM; the summary holds what ran so far; continue with the same command and " \
           "--resume" in err
    assert not (study / ".finished").exists() and not (study / "driver.lock").exists()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("table7-nn-toy-toy")
    assert "RUNNING" not in {r.info.status for r in client.search_runs([experiment.experiment_id])}

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(study / "trials.parquet")
    assert len(frame) == 2 and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3 and sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def test_ctrl_c_stops_every_study_a_reproduce_runs_at_once_and_resume_finishes_them(tmp_path, kill_session):
    """`reproduce` runs a table's six studies in one driver, several at once (started in turn): one
    Ctrl+C stops all that run resumably and starts no further one (exit 130, no run left RUNNING,
    no lock left), and `--resume` finishes every study, those never started too, with its exact
    counts."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [sys.executable, "-m", "seqrep.cli", "reproduce", "table7", "--dataset", "toy", "--trials", "2",
           "--max-epochs", "400", "--cohort-size", "1", "--storage", str(tmp_path / "s"), "--tracking-uri", uri,
           "--out", str(tmp_path / "tables")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any((tmp_path / "s").glob("*/ray/*/checkpoint_*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 130, err[-3000:]
    assert "seqrep: interrupted; the summary holds what ran so far; continue with the same command and --resume" in err
    studies = sorted((tmp_path / "s").iterdir())
    assert 1 <= len(studies) <= 6 and not any((study / "driver.lock").exists() for study in studies)
    assert not all((study / ".finished").exists() for study in studies)
    client = MlflowClient(uri)
    experiments = {study.name: client.get_experiment_by_name(study.name).experiment_id for study in studies}
    assert "RUNNING" not in {r.info.status for r in client.search_runs(list(experiments.values()))}

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    studies = sorted((tmp_path / "s").iterdir())
    assert len(studies) == 6
    experiments = {study.name: client.get_experiment_by_name(study.name).experiment_id for study in studies}
    for study in studies:
        trials = 1 if "fawn" in study.name else 2  # a fixed configuration runs once whatever --trials says
        frame = pd.read_parquet(study / "trials.parquet")
        assert len(frame) == trials and set(frame["status"]) == {"completed"} and (frame["epochs"] == 400).all()
        runs = client.search_runs([experiments[study.name]])
        assert sorted(r.info.status for r in runs) == ["FINISHED"] * (1 + trials), study.name
    assert (tmp_path / "tables" / "table7.md").exists()
