"""The `seqrep` command line: listings, and bad input that exits 2 with one actionable message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from seqrep.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_lists_both_toy_spaces(capsys):
    code, out, err = run_cli(capsys, "spaces")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["table7-nn-toy"][1:3] == ["mlp", "7"] and rows["table7-dn-toy"][1:3] == ["mdn", "7"]
    assert "Table 7, Sections 2.6.3 and 2.6.3.1" in out


def test_spaces_name_prints_readably_and_as_json(capsys):
    code, out, _ = run_cli(capsys, "spaces", "table7-dn-toy")
    assert code == 0 and "components  1" in out and "loguniform 0.0001 … 0.1" in out
    code, out, _ = run_cli(capsys, "spaces", "table7-dn-toy", "--json")
    resolved = json.loads(out)
    assert resolved["fixed"] == {"components": 1}
    assert resolved["space"]["batch_size"] == {"type": "choice", "values": [10, 25, 50]}
    assert resolved["space"]["step_rate"] == {"type": "loguniform", "low": 0.0001, "high": 0.1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "table99", "--dataset", "toy"], "seqrep: error: unknown search space 'table99'; available: "),
        (["search", "table7-nn-toy", "--dataset", "moon"], "seqrep: error: unknown dataset 'moon'; available: characters, jsb, "),
        (["reproduce", "table99"], "seqrep: error: unknown table 'table99'; available: table3, table6, table7, table8"),
        (["reproduce", "table7", "--dataset", "jsb"], "seqrep: error: table7 has no data set(s) jsb; it covers toy, sarcos"),
        (["summarize", "."], "seqrep: error: . is not a seqrep study (no study.json)"),
    ],
)
def test_bad_names_exit_2_with_one_message(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *argv, *(["--storage", str(tmp_path)] if argv[0] != "summarize" else []))
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--trials", "0", "argument --trials: must be a positive integer, got '0'"),
        ("--max-epochs", "-3", "argument --max-epochs: must be a positive integer, got '-3'"),
        ("--cpus-per-trial", "-1", "argument --cpus-per-trial: must be a number >= 0 (fractions allowed), got '-1'"),
        ("--gpus-per-trial", "half", "argument --gpus-per-trial: must be a number >= 0 (fractions allowed), got 'half'"),
        ("--searcher", "grid", "argument --searcher: invalid choice: 'grid' (choose from "),  # quoting varies by Python
    ],
)
def test_bad_flags_exit_2_before_anything_starts(capsys, tmp_path, flag, value, message):
    with pytest.raises(SystemExit) as info:
        main(["search", "table7-nn-toy", "--dataset", "toy", "--storage", str(tmp_path), flag, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_negative_studies_at_once_exits_2_before_anything_starts(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "table7", "--dataset", "toy", "--storage", str(tmp_path), "--studies-at-once", "-1"])
    assert info.value.code == 2
    assert "argument --studies-at-once: must be an integer >= 0, got '-1'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_malformed_space_file_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nspace: {a: [1,\n")
    code, _, err = run_cli(capsys, "search", str(bad), "--dataset", "toy", "--storage", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"seqrep: error: {bad}: line ") and "not valid YAML" in err
    assert not (tmp_path / "s").exists()


def test_a_folder_that_is_not_a_study_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "table7-nn-toy-toy").mkdir()
    (tmp_path / "table7-nn-toy-toy" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "search", "table7-nn-toy", "--dataset", "toy", "--storage", str(tmp_path),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
    assert code == 2 and "exists and is not a seqrep study; choose another --name or --storage" in err
    assert (tmp_path / "table7-nn-toy-toy" / "notes.txt").read_text() == "mine"


def test_data_list_shows_the_generated_toy_set(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[:-1]}
    assert code == 0 and rows["toy"] == "generated" and rows["jsb"] == "missing"
    assert out.splitlines()[-1] == f"data directory: {tmp_path}"
    yoga = next(line for line in out.splitlines() if line.startswith("ucr-yoga "))  # what is missing, at the end
    assert yoga.endswith("labelled univariate series; needs ucr/Yoga/Yoga_TRAIN.tsv, ucr/Yoga/Yoga_TEST.tsv")


def test_data_list_of_a_folder_that_does_not_exist_says_so(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 0 and out.splitlines()[-1] == (
        f"data directory: {tmp_path / 'nowhere'} (no such folder: `seqrep data download` makes it, or point "
        "--data-dir or $SEQREP_DATA at your data)")


@pytest.mark.integration
def test_search_from_the_shell_twice_gives_identical_configs(tmp_path):
    """The issue's acceptance command, run as a user would, with two storages."""
    configs = []
    for storage in ("a", "b"):
        d = tmp_path / storage
        cmd = [sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy", "--trials", "3",
               "--max-epochs", "30", "--seed", "7", "--storage", str(d), "--tracking-uri", f"sqlite:///{d}/m.db"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "seqrep: study table7-nn-toy-toy: 3 trials (3 completed)" in done.stdout
        frame = pd.read_parquet(d / "table7-nn-toy-toy" / "trials.parquet")
        assert len(frame) == 3
        configs.append(frame.filter(like="config.").to_dict("records"))
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{d}/m.db")
        runs = client.search_runs([client.get_experiment_by_name("table7-nn-toy-toy").experiment_id])
        assert sorted("mlflow.parentRunId" in r.data.tags for r in runs) == [False, True, True, True]
    assert configs[0] == configs[1]


@pytest.mark.integration
def test_ctrl_c_stops_resumably_and_resume_finishes_every_trial_once(tmp_path):
    """Ctrl+C: exit 130, runs of the lost attempt KILLED; --resume: one row and one FINISHED run per trial."""
    import signal
    import time

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy", "--trials", "3",
           "--max-epochs", "3000", "--seed", "3", "--storage", str(tmp_path / "s"), "--tracking-uri", uri,
           "--max-concurrent", "1"]
    study = tmp_path / "s" / "table7-nn-toy-toy"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(study.glob("ray/*/checkpoint_*")):  # the first trial has persisted a checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "continue with the same command and --resume" in err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("table7-nn-toy-toy")
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert "RUNNING" not in statuses and "KILLED" in statuses
    assert not (study / ".finished").exists()

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(study / "trials.parquet")
    assert len(frame) == 3 and frame["trial_id"].is_unique and set(frame["status"]) == {"completed"}
    assert (frame["epochs"] == 3000).all()
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "valid_nll")]
        assert sorted(set(steps)) == list(range(1, 3001))


def test_table1_space_is_exactly_table_1(capsys):
    code, out, _ = run_cli(capsys, "spaces", "table1-fd-rnn", "--json")
    resolved = json.loads(out)
    choices = {k: v["values"] for k, v in resolved["space"].items()}
    assert all(v["type"] == "choice" for v in resolved["space"].values())
    assert choices == {
        "hidden_units": [200, 400, 600],
        "p_drop_input": [0.0, 0.1, 0.2],
        "p_drop_hidden": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        "p_drop_output": [0.0, 0.2, 0.5],
        "fd_final_layer": [True, False],
        "step_rate": [0.01, 0.005, 0.001, 0.0005, 0.0001, 0.00001],
        "momentum": [0.0, 0.9, 0.95, 0.99, 0.995],
        "decay": [0.8, 0.9],
        "sigma2": [0.1, 0.01, 0.001, 0.0001],
        "sigma2_in": [0.1, 0.01, 0.001, 0.0001],
        "rho": [1.0, 1.05, 1.1, 1.2],
        "nu": [15, 25, 35, 50, None],  # Table 1's ν: sparse initialisation (issue 12), "no" = dense
    }
    assert resolved["fixed"] == {"cell": "tanh", "optimizer": "rmsprop", "b_h": 0.0, "b_y": -0.8, "grad_norm": None}
    assert resolved["datasets"] == ["jsb", "nottingham", "piano-midi", "musedata"]


def test_table4_spaces_sample_uniformly_within_table_4(capsys):
    code, out, _ = run_cli(capsys, "spaces", "table4-fd-lstm", "--json")
    space = json.loads(out)["space"]
    assert space["hidden_units"] == {"type": "randint", "low": 100, "high": 300, "inclusive": True}
    assert space["p_drop_hidden"] == {"type": "uniform", "low": 0.01, "high": 0.5}
    assert space["sigma2_in"] == {"type": "uniform", "low": 0.0001, "high": 1.5}
    assert "rho" not in space and json.loads(out)["fixed"]["rho"] is None
    code, out, _ = run_cli(capsys, "spaces", "table4-fd-rnn", "--json")
    assert json.loads(out)["space"]["rho"] == {"type": "uniform", "low": 0.8, "high": 4.0}


def test_tables_3_and_6_run_the_piano_roll_spaces():
    from seqrep import tables

    assert tables.studies_for("table3", ["jsb"]) == [("table1-fd-rnn", "jsb"), ("table3-srnn", "jsb")]
    assert tables.studies_for("table6") == [
        ("table4-srnn", "piano-midi"), ("table4-lstm", "piano-midi"), ("table4-fd-rnn", "piano-midi"),
        ("table4-fd-lstm", "piano-midi"), ("table4-srnn", "jsb"), ("table4-lstm", "jsb"),
        ("table4-fd-rnn", "jsb"), ("table4-fd-lstm", "jsb")]


def test_a_missing_data_file_names_the_directory_and_the_download(capsys, tmp_path):
    code, _, err = run_cli(capsys, "search", "table1-fd-rnn", "--dataset", "jsb", "--data-dir", str(tmp_path),
                           "--storage", str(tmp_path / "s"))
    assert code == 2
    assert err.startswith(f"seqrep: error: data set 'jsb' needs {tmp_path}/polyphonic/JSB_Chorales.pickle, "
                          f"which is not in the data directory {tmp_path}; fetch it with "
                          f"`seqrep data download jsb --data-dir {tmp_path}`")
    assert not (tmp_path / "s").exists()
