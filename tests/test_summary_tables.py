"""trials.parquet from a study folder, and a thesis table rebuilt from summaries (no Ray needed)."""

from __future__ import annotations

import json
import math
import pickle

import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqrep import results, studydir, summary, tables
from seqrep.errors import SeqrepError
from seqrep.results import trial_seed

STUDY = {
    "name": "table7-nn-toy-toy", "space": "table7-nn-toy", "method": "mlp", "dataset": "toy", "seed": 7,
    "metric": "valid_nll", "mode": "min", "cpus_per_trial": 1.0, "gpus_per_trial": 0.5,
}


def epoch(e, nll, mse=1.0):
    return {"epoch": e, "train_loss": 1.0, "valid_nll": nll, "valid_mse": mse}


def make_trial(study_dir, trial_id, config, results, error=None):
    d = study_dir / studydir.RAY_DIR / trial_id
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(config))
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
    if error:
        (d / "error.txt").write_text(error)


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / STUDY["name"]
    d.mkdir()
    (d / "study.json").write_text(json.dumps(STUDY))
    (d / "mlflow_runs.json").write_text(json.dumps({"t_00000": "run0", "t_00001": "run1"}))
    common = {"node_ip": "10.0.0.1", "time_total_s": 12.5}
    # completed, restarted once: epochs 2-3 were reported twice, the replay must not double-count
    make_trial(d, "t_00000", {"hidden_units": 10, "transfer": "sigmoid", "step_rate": 0.01}, [
        {**epoch(2, 1.5), "history": [epoch(1, 2.0), epoch(2, 1.5)], **common},
        {**epoch(3, 1.7), "history": [epoch(2, 1.5), epoch(3, 1.7)], **common},
        {**epoch(3, 1.5), "valid_mse": 0.9, "best_epoch": 2, "test_nll": 1.6, "test_mse": 1.1,
         "seqrep_status": "completed", "history": [], **common},
    ])
    # diverged after a finite best epoch
    make_trial(d, "t_00001", {"hidden_units": 25, "transfer": "rectifier", "step_rate": 1e30}, [
        {**epoch(2, math.nan), "history": [epoch(1, 3.0), epoch(2, math.nan)], **common},
        {"valid_nll": 3.0, "valid_mse": 2.0, "best_epoch": 1, "test_nll": 3.1, "test_mse": 2.1,
         "seqrep_status": "diverged", "history": [], **common},
    ])
    # errored in epoch 2
    make_trial(d, "t_00002", {"hidden_units": 50, "transfer": None, "step_rate": 0.001}, [
        {**epoch(1, 2.5), "history": [epoch(1, 2.5)], **common},
    ], error="Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA out of memory\n")
    # stopped (scheduler or a dead driver); the last line is cut short
    make_trial(d, "t_00003", {"hidden_units": 100, "transfer": "sigmoid", "step_rate": 0.1}, [
        {**epoch(2, 2.2), "history": [epoch(1, 2.4), epoch(2, 2.2)], **common},
    ])
    with open(d / studydir.RAY_DIR / "t_00003" / "result.json", "a") as f:
        f.write('{"epoch": 3, "vali')
    return d


def test_one_row_per_trial_with_status_metrics_and_types(study_dir):
    out = summary.write(study_dir)
    assert [p.name for p in study_dir.iterdir() if "tmp" in p.name] == []
    table = pq.read_table(out)
    frame = table.to_pandas()
    assert len(frame) == 4 and frame["trial_id"].tolist() == ["t_00000", "t_00001", "t_00002", "t_00003"]
    assert frame["status"].tolist() == ["completed", "diverged", "errored", "stopped"]
    assert frame["best_epoch"].tolist() == [2, 1, 1, 2]
    assert frame["valid_nll"].tolist() == [1.5, 3.0, 2.5, 2.2]
    assert frame["test_nll"].iloc[:2].tolist() == [1.6, 3.1]
    assert frame["test_nll"].iloc[2:].isna().all()
    assert frame["epochs"].tolist() == [3, 2, 1, 2]
    assert frame["error"].iloc[2] == "RuntimeError: CUDA out of memory"
    assert table.column("mlflow_run_id").to_pylist() == ["run0", "run1", None, None]
    assert frame["trial_seed"].iloc[0] == trial_seed(7, {"hidden_units": 10, "transfer": "sigmoid", "step_rate": 0.01})
    assert str(table.schema.field("config.hidden_units").type) == "int64"
    assert str(table.schema.field("config.step_rate").type) == "double"
    assert str(table.schema.field("config.transfer").type) == "string"
    assert table.column("config.transfer").to_pylist() == ["sigmoid", "rectifier", None, "sigmoid"]
    assert frame["gpus"].tolist() == [0.5] * 4 and frame["node"].iloc[0] == "10.0.0.1"
    assert list(frame.columns[:10]) == summary.IDENTITY_COLUMNS
    assert frame["draw"].tolist() == [0, 1, 2, 3]  # Ray numbers a search's trials in the order it draws them
    assert list(frame.columns[-8:]) == summary.TAIL_COLUMNS
    assert frame["cohort"].isna().all()  # every trial ran alone


def test_rewriting_never_duplicates(study_dir):
    summary.write(study_dir)
    summary.write(study_dir)
    assert len(summary.read(study_dir)) == 4


def _state(study_dir, configs):
    """A Ray Tune experiment state naming `configs` (trial id -> config), as Ray writes it."""
    trials = [[json.dumps({"trial_id": trial_id, "config": config, "status": "RUNNING"}), "{}"]
              for trial_id, config in configs.items()]
    (study_dir / studydir.RAY_DIR / "experiment_state-2026-12-02_10-00-00.json").write_text(
        json.dumps({"trial_data": trials, "runner_data": {}, "stats": {}}))


def test_a_params_json_left_empty_by_a_killed_driver_is_read_elsewhere(study_dir, caplog):
    """SIGKILL while Ray writes `params.json` leaves it empty: the config comes from `params.pkl`,
    else from Ray's experiment state; a trial folder with neither is no trial Ray knows of."""
    ray = study_dir / studydir.RAY_DIR
    (ray / "t_00000" / "params.json").write_text("")
    with open(ray / "t_00000" / "params.pkl", "wb") as f:
        pickle.dump({"hidden_units": 10, "transfer": "sigmoid", "step_rate": 0.01}, f)
    (ray / "t_00001" / "params.json").write_text('{"hidden_units": 2')  # cut short
    _state(study_dir, {"t_00001": {"hidden_units": 25, "transfer": "rectifier", "step_rate": 1e30}})
    make_trial(study_dir, "t_00004", {}, [])
    (ray / "t_00004" / "params.json").write_text("")  # not in the state: a trial Ray never recorded
    frame = summary.read(summary.write(study_dir).parent)
    assert frame["trial_id"].tolist() == ["t_00000", "t_00001", "t_00002", "t_00003"]
    assert frame["config.hidden_units"].tolist() == [10, 25, 50, 100]
    assert frame["config.step_rate"].tolist() == [0.01, 1e30, 0.001, 0.1]
    assert frame["status"].tolist() == ["completed", "diverged", "errored", "stopped"]
    assert [r.message for r in caplog.records if "never recorded" in r.message] == [
        f"{ray / 't_00004'}: no config in params.json, params.pkl or Ray Tune's experiment state; a trial Ray "
        "never recorded (its driver was killed as it started), left out"]


def test_a_state_cut_short_falls_back_to_the_one_before(tmp_path):
    ray = tmp_path / "ray"
    ray.mkdir()
    trial = [json.dumps({"trial_id": "t_00000", "config": {"a": 1}}), "{}"]
    (ray / "experiment_state-2026-12-02_10-00-00.json").write_text(json.dumps({"trial_data": [trial]}))
    (ray / "experiment_state-2026-12-02_10-00-05.json").write_text('{"trial_data": [["{\"trial_id')
    assert results.state_configs(ray) == {"t_00000": {"a": 1}}
    assert results.state_configs(tmp_path) == {}


def test_summarize_refuses_a_folder_that_is_not_a_study(tmp_path):
    with pytest.raises(SeqrepError, match="is not a seqrep study"):
        summary.write(tmp_path)


def test_table7_picks_the_best_finished_trial_by_validation(study_dir):
    summary.write(study_dir)
    frame = tables.build("table7", lambda space, dataset: study_dir if space == "table7-nn-toy" else None, ["toy"])
    nn = frame[frame["method"] == "NN"].set_index("metric")
    assert nn.loc["test_mse", "thesis"] == "4.2395" and nn.loc["test_nll", "thesis"] == "2.2694"
    # t_00000 (completed, valid 1.5) beats t_00001 (diverged, valid 3.0); errored/stopped never count
    assert nn.loc["test_nll", "ours"] == 1.6 and nn.loc["test_mse", "ours"] == 1.1
    assert nn.loc["test_nll", "best_trial"] == "t_00000" and nn.loc["test_nll", "trials"] == 2
    dn = frame[frame["method"] == "DN"].set_index("metric")
    assert dn.loc["test_nll", "thesis"] == "9.7303" and math.isnan(dn.loc["test_nll", "ours"])
    assert set(frame["dataset"]) == {"toy"} and len(frame) == 12  # NN DN FD IVN FAWN-VB FAWN-ROPD x 2
    text = tables.to_markdown("table7", frame)
    assert "| toy | NN | 4.2395 | 1.1000 | 2.2694 | 1.6000 | 2 |" in text


def test_table_writes_md_and_long_csv(tmp_path, study_dir):
    summary.write(study_dir)
    frame = tables.build("table7", lambda s, d: study_dir if s == "table7-nn-toy" else None, ["toy"])
    md, csv = tables.write("table7", frame, tmp_path / "out")
    back = pd.read_csv(csv)
    assert list(back.columns[:5]) == ["dataset", "method", "metric", "thesis", "ours"]
    assert len(back) == 12 and md.read_text().startswith("# table7: thesis beside seqrep")


def test_ties_go_to_the_config_drawn_first_whatever_the_row_order():
    """A cohort study lists its members by cohort (its grouping follows the cluster's size), so
    the table's pick among equal validation values must not follow the rows."""
    rows = pd.DataFrame({"trial_id": ["c1-m0", "c0-m0", "c0-m1", "c1-m1"], "status": ["completed"] * 4,
                         "valid_error": [0.2, 0.1, 0.3, 0.1], "draw": [3, 2, 0, 1]})
    assert tables.best_trial(rows, "valid_error", "min")["trial_id"] == "c1-m1"  # draw 1 before draw 2
    assert tables.best_trial(rows.assign(valid_error=[0.2, 0.3, 0.3, 0.1]), "valid_error", "max")["trial_id"] == "c0-m1"
    older = rows.drop(columns="draw")  # a summary written before it had draws: the first row among equals
    assert tables.best_trial(older, "valid_error", "min")["trial_id"] == "c0-m0"
    assert tables.best_trial(rows.assign(draw=[3, None, 0, 1]), "valid_error", "min")["trial_id"] == "c0-m0"
    assert results.draw_index("ab12c_00007") == 7 and results.draw_index("ab12c_00007-m1") is None


def test_unknown_table_and_dataset_are_clear_errors():
    with pytest.raises(SeqrepError, match=r"unknown table 'table99'; available: table3, table6, table7, table8"):
        tables.load_reference("table99")
    with pytest.raises(SeqrepError, match=r"table7 has no data set\(s\) jsb; it covers toy, sarcos"):
        tables.studies_for("table7", ["jsb"])


def test_studies_for_table7_are_the_spaces_that_exist():
    assert tables.studies_for("table7", ["toy"]) == [
        (f"table7-{m}-toy", "toy") for m in ("nn", "dn", "fd", "ivn", "fawn-vb", "fawn-ropd")]
