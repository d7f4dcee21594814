"""Soak: many tiny trials through one driver, and several drivers against one MLflow server.

The 200-trial soak takes about 2 minutes on 2 cores and runs in the suite (`SEQREP_SOAK=0` skips
it); the three drivers against one MLflow server start three Ray clusters, minutes on 2 cores, so
that one is opt-in: `SEQREP_SOAK=1 python -m pytest tests/test_soak.py -s`. Each test prints what
it measured (`-s` shows it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = int(os.environ.get("SEQREP_SOAK_TRIALS", "200"))
RSS_GROWTH_BOUND_MIB = 150  # driver memory after the study minus after its first 20 trials


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _finished_trials(study: Path) -> int:
    done = 0
    for result in study.glob("ray/*/result.json"):
        with open(result, "rb") as f:
            f.seek(max(0, result.stat().st_size - 4096))
            done += b'"seqrep_status": "' in f.read().splitlines()[-1:][0] if result.stat().st_size else 0
    return done


@pytest.mark.skipif(os.environ.get("SEQREP_SOAK") == "0", reason="SEQREP_SOAK=0 skips the soak")
def test_two_hundred_tiny_trials_two_at_a_time_on_the_embedded_store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    study = tmp_path / "s" / "table7-nn-toy-toy"
    cmd = [sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy", "--trials", str(TRIALS),
           "--max-epochs", "3", "--storage", str(tmp_path / "s"), "--tracking-uri", uri, "--cpus-per-trial", "1",
           "--cohort-size", "1"]  # 200 Ray trials: the soak is of the platform's per-trial path
    log = (tmp_path / "driver.log").open("w+")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rss_20 = rss_end = None
    while proc.poll() is None:
        done, rss = _finished_trials(study), _rss_mib(proc.pid)
        if rss is not None:
            rss_end = rss
            if rss_20 is None and done >= 20:
                rss_20 = rss
        time.sleep(1)
    wall = time.monotonic() - start
    log.seek(0)
    output = log.read()
    assert proc.returncode == 0, output[-3000:]
    assert "database is locked" not in output
    frame = pd.read_parquet(study / "trials.parquet")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(study.name).experiment_id], max_results=5000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    print(f"\nsoak: {len(frame)} rows, {len(children)} child runs "
          f"({sum(r.info.status == 'FINISHED' for r in children)} FINISHED), {wall:.0f} s "
          f"({wall / TRIALS:.2f} s/trial); driver RSS after 20 trials {rss_20:.0f} MiB, at the end {rss_end:.0f} MiB")
    assert len(frame) == TRIALS and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    assert len(children) == TRIALS and all(r.info.status == "FINISHED" for r in children)
    assert rss_end - rss_20 < RSS_GROWTH_BOUND_MIB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.environ.get("SEQREP_SOAK") != "1", reason="three Ray clusters for minutes: set SEQREP_SOAK=1")
def test_three_studies_at_once_against_one_mlflow_server(tmp_path):
    from mlflow.tracking import MlflowClient

    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(1)
        names = ["a", "b", "c"]
        drivers = [subprocess.Popen([sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy",
                                     "--trials", "2", "--max-epochs", "40", "--name", n, "--storage", str(tmp_path / "s"),
                                     "--tracking-uri", uri, "--cpus-per-trial", "0.5"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for n in names]
        errors = [d.communicate(timeout=900)[1] for d in drivers]
        assert [d.returncode for d in drivers] == [0, 0, 0], "\n".join(e[-2000:] for e in errors)
        client = MlflowClient(uri)
        for name in names:
            runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
            children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            assert len(runs) == 3 and len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
            for child in children:
                steps = [m.step for m in client.get_metric_history(child.info.run_id, "valid_nll")]
                assert sorted(steps) == list(range(1, 41)), name
        print("\nthree studies against one MLflow server: 3 x (1 parent + 2 children), every epoch of 40 arrived")
    finally:
        os.killpg(server.pid, 9)
        server.wait()
