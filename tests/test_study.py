"""Studies on a real local Ray cluster (2 CPUs, 2 logical GPUs) tracked in a real sqlite MLflow store."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from seqrep import launch, reproduce, studies, summary, tables  # noqa: E402
from seqrep.errors import SeqrepError  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def options(tmp_path, **kw):
    base = dict(storage=str(tmp_path / "studies"), tracking_uri=f"sqlite:///{tmp_path}/m.db", seed=7,
                command="seqrep search (test)")
    base.update(kw)
    return studies.StudyOptions(**base)


def runs_of(uri, study):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_three_trials_on_fractional_gpus_give_three_rows_and_nested_runs(tmp_path):
    o = options(tmp_path, trials=3, max_epochs=4, cpus_per_trial=0.5, gpus_per_trial=0.5)
    p = studies.plan("table7-nn-toy", "toy", o)
    frame = summary.read(launch.run_study(p).parent)
    assert len(frame) == 3 and frame["trial_id"].is_unique
    assert frame["status"].tolist() == ["completed"] * 3
    assert frame["gpus"].tolist() == [0.5] * 3 and frame["epochs"].tolist() == [4] * 3
    assert frame["best_epoch"].between(1, 4).all() and frame["test_nll"].notna().all()
    client, parents, children = runs_of(o.tracking_uri, p.name)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["seqrep.space"] == "table7-nn-toy" and parent.data.tags["seqrep.seed"] == "7"
    assert parent.data.tags["seqrep.source"] == "Table 7, Sections 2.6.3 and 2.6.3.1"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["trials.parquet"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.info.run_id for c in children) == sorted(frame["mlflow_run_id"])
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["seqrep.status"] == "completed"
        history = client.get_metric_history(child.info.run_id, "valid_nll")
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert set(child.data.params) == {"hidden_layers", "transfer", "hidden_units", "batch_size",
                                          "step_rate", "decay", "momentum"}
        assert {"test_nll", "test_mse", "best_valid_nll", "best_epoch"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.json", "model.pt", "predictive.png"} <= artifacts
        row = frame.set_index("mlflow_run_id").loc[child.info.run_id]
        assert child.data.metrics["test_nll"] == pytest.approx(row["test_nll"])


DIVERGING = """\
name: diverging
method: mlp
source: test
datasets: [toy]
metric: valid_nll
mode: min
trials: 4
max_epochs: 3
space:
  step_rate: {choice: [1.0e+30, 0.001]}
"""


def test_a_nan_producing_trial_ends_diverged_and_the_study_goes_on(tmp_path):
    path = tmp_path / "diverging.yaml"
    path.write_text(DIVERGING)
    o = options(tmp_path, max_epochs=3, seed=1)
    p = studies.plan(str(path), "toy", o)
    frame = summary.read(launch.run_study(p).parent)
    assert len(frame) == 4
    huge = frame["config.step_rate"] == 1e30
    assert huge.any() and (~huge).any(), "seed 1 must draw both step rates"
    assert set(frame.loc[huge, "status"]) == {"diverged"}
    assert set(frame.loc[~huge, "status"]) == {"completed"}
    assert frame.loc[~huge, "test_nll"].notna().all()
    _, _, children = runs_of(o.tracking_uri, p.name)
    assert sorted(c.data.tags["seqrep.status"] for c in children) == sorted(frame["status"])


def test_existing_studies_are_refused_or_resumed_without_duplicates(tmp_path):
    o = options(tmp_path, trials=2, max_epochs=2)
    p = studies.plan("table7-nn-toy", "toy", o)
    launch.run_study(p)
    with pytest.raises(SeqrepError, match=r"already exists in .* \(finished\); pass --resume to continue it"):
        launch.run_study(studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=2, max_epochs=2)))
    with pytest.raises(SeqrepError, match=r"already holds a different study named 'table7-nn-toy-toy' "
                                          r"\(it differs in trials\); choose another --name"):
        launch.run_study(studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=3, max_epochs=2)))
    with pytest.raises(SeqrepError, match=r"--resume: nothing to resume in .*table7-dn-toy-toy"):
        launch.run_study(studies.plan("table7-dn-toy", "toy", options(tmp_path, trials=2, max_epochs=2, resume=True)))
    resumed = studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=2, max_epochs=2, resume=True))
    frame = summary.read(launch.run_study(resumed).parent)
    assert len(frame) == 2 and frame["trial_id"].is_unique
    _, parents, children = runs_of(o.tracking_uri, p.name)
    assert len(parents) == 1 and len(children) == 2
    assert json.loads((p.directory / "study.json").read_text())["attempts"] == 2


@pytest.mark.parametrize("damage, message", [
    ("tuner", r"--resume: Ray Tune could not read the study's Tuner from .*tuner\.pkl \(.*\); start the study again"),
    ("no state", r"--resume: .*ray holds no Ray Tune run state \(experiment_state-\*\.json\) and seqrep kept no copy"),
    ("empty state", r"--resume: Ray Tune could not restore the study's run state \(KeyError\('runner_data'\)\) and "
                    r"would start it over"),
])
def test_a_refused_resume_leaves_the_finished_study_as_it_was(tmp_path, damage, message):
    p = studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=2, max_epochs=2))
    launch.run_study(p)
    ray_dir = p.directory / "ray"
    if damage == "tuner":
        (ray_dir / "tuner.pkl").write_bytes(b"garbage")
    for state in ray_dir.glob("experiment_state-*.json"):
        state.write_text("{}") if damage == "empty state" else state.unlink()
    if damage == "no state":
        for state in (p.directory / "ray-state").glob("experiment_state-*.json"):
            state.unlink()
    before = {f: (p.directory / f).read_bytes() for f in ("study.json", ".finished", "trials.parquet")}
    with pytest.raises(SeqrepError, match=message):
        launch.run_study(studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=2, max_epochs=2, resume=True)))
    assert {f: (p.directory / f).read_bytes() for f in before} == before
    _, parents, children = runs_of(p.options.tracking_uri, p.name)
    assert [r.info.status for r in parents] == ["FINISHED"] and len(children) == 2


def test_optuna_searcher_is_seeded(tmp_path):
    configs = []
    for run in ("a", "b"):
        o = options(tmp_path / run, trials=3, max_epochs=2, searcher="optuna", max_concurrent=1)
        frame = summary.read(launch.run_study(studies.plan("table7-dn-toy", "toy", o)).parent)
        assert len(frame) == 3 and set(frame["status"]) == {"completed"}
        # OptunaSearch names trials by random ids, so rows come in another order: compare as sets
        configs.append(sorted(json.dumps(r, sort_keys=True) for r in frame.filter(like="config.").to_dict("records")))
    assert configs[0] == configs[1]


def test_a_trial_too_big_for_every_node_is_refused_before_it_waits(tmp_path):
    p = studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=1, gpus_per_trial=4))
    with pytest.raises(SeqrepError, match=r"no node of the Ray cluster can hold one trial \(1 CPU, 4 GPU\)"):
        launch.run_study(p)


def test_reproduce_table7_toy_fills_every_row(tmp_path, monkeypatch):
    import threading

    from seqrep import report

    drawn_in, draw = [], report.study_section

    def counted(*args, **kwargs):
        drawn_in.append(threading.current_thread().name)
        return draw(*args, **kwargs)

    monkeypatch.setattr(report, "study_section", counted)
    md, csv = reproduce.reproduce("table7", ["toy"], options(tmp_path, trials=2, max_epochs=3), tmp_path / "tables")
    # each study's report section was drawn once, as soon as it ended, beside the studies' threads
    assert len(drawn_in) == 6 and all(name.startswith("seqrep-after") for name in drawn_in)
    # an expected best of n for the four searches (FAWN's one trial per configuration has none)
    assert len(list((tmp_path / "tables" / "figures" / "table7").glob("*-expected.png"))) == 4
    import pandas as pd

    frame = pd.read_csv(csv)
    filled = frame[frame["ours"].notna()]
    assert sorted(set(filled["method"])) == ["DN", "FAWN-ROPD", "FAWN-VB", "FD", "IVN", "NN"] and len(filled) == 12
    fixed = filled["method"].str.startswith("FAWN")  # a fixed configuration runs once whatever --trials says
    assert (filled[~fixed]["trials"] == 2).all() and (filled[fixed]["trials"] == 1).all()
    nn = frame[(frame["method"] == "NN")].set_index("metric")
    assert nn.loc["test_mse", "thesis"] == 4.2395 and nn.loc["test_nll", "thesis"] == 2.2694
    assert frame[frame["dataset"] == "sarcos"]["ours"].isna().all()
    assert "| toy | DN | 3.8706 |" in md.read_text()
    # the six studies ran in one driver, several at once (started in turn), each with its own
    # trials only, and each has its own runs
    spans = []
    for study in sorted((tmp_path / "studies").iterdir()):
        trials = 1 if "fawn" in study.name else 2
        grouping = study / "cohorts.json"  # FAWN's one configuration is a cohort of one
        ray_trials = len(json.loads(grouping.read_text())["cohorts"]) if grouping.exists() else trials
        assert len(list((study / "ray").glob("*/params.json"))) == ray_trials, study.name
        assert len(summary.read(study)) == trials
        _, parents, children = runs_of(f"sqlite:///{tmp_path}/m.db", study.name)
        assert len(parents) == 1 and len(children) == trials and parents[0].info.status == "FINISHED"
        spans.append((parents[0].info.start_time, parents[0].info.end_time))
    assert len(spans) == 6 and any(b_start < a_end and a_start < b_end for i, (a_start, a_end) in enumerate(spans)
                                   for b_start, b_end in spans[i + 1:])
    # a second call reuses both finished studies instead of running them again
    before = {p.name: p.stat().st_mtime for p in (tmp_path / "studies").glob("*/trials.parquet")}
    reproduce.reproduce("table7", ["toy"], options(tmp_path, trials=2, max_epochs=3), tmp_path / "tables")
    after = {p.name: p.stat().st_mtime for p in (tmp_path / "studies").glob("*/trials.parquet")}
    assert before == after
    assert tables.read_manifest("table7", tmp_path / "tables")["study_commits"] == {studies.git_commit(): 6}


def test_asha_never_stops_a_trial_at_its_budget_before_it_finishes(tmp_path):
    """Every report sent at once (interval 0): the last epoch's report goes with the final result,
    so ASHA's stop at max_t cannot cut a trial off before its test metrics; trials ASHA stops at
    an earlier rung are `stopped` with fewer epochs."""
    p = studies.plan("table7-nn-toy", "toy", options(tmp_path, trials=6, max_epochs=3, scheduler="asha",
                                                      report_interval_s=0.0, cohort_size=1))
    frame = summary.read(launch.run_study(p).parent)
    assert len(frame) == 6
    at_budget = frame[frame["epochs"] == 3]
    assert len(at_budget) >= 1 and set(at_budget["status"]) == {"completed"}
    assert at_budget["test_nll"].notna().all()
    assert (frame[frame["status"] == "stopped"]["epochs"] < 3).all()
