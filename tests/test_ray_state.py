"""`seqrep.ray_state`: the whole copy of Ray Tune's run state that survives a driver killed while
Tune copied that state into the study folder (the resume test in test_cohort_study.py cuts the
file short in a real killed study)."""

from __future__ import annotations

import json
import logging
import os
import pickle
from types import SimpleNamespace

import pytest

from seqrep import ray_state
from seqrep.errors import SeqrepError

EXPERIMENT = "experiment_state-2026-12-03_10-00-00.json"
SEARCHER = "basic-variant-state-2026-12-03_10-00-00.json"  # a pickle, despite its name (Ray's)
OPTUNA = ("search_gen_state-2026-12-03_10-00-00.json", "searcher-state-2026-12-03_10-00-00.pkl")  # --searcher optuna


def save(folder, epoch: int) -> None:
    """What Tune's save writes: the experiment state (JSON) and the searcher's (a pickle)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EXPERIMENT).write_text(json.dumps({"trial_data": [], "runner_data": {"epoch": epoch}}))
    for name in (SEARCHER, *OPTUNA):
        (folder / name).write_bytes(pickle.dumps({"_counter": epoch}))


def cut_short(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def study(tmp_path):
    save(tmp_path / "staging", epoch=7)
    ray_state.keep(tmp_path / "staging", tmp_path / "study" / ray_state.KEPT_DIR)
    save(tmp_path / "study" / "ray", epoch=7)
    return tmp_path / "study"


def test_a_whole_state_is_left_as_it_is(study):
    before = {f.name: f.stat().st_mtime_ns for f in (study / "ray").iterdir()}
    assert ray_state.repair(study) == []
    assert {f.name: f.stat().st_mtime_ns for f in (study / "ray").iterdir()} == before


@pytest.mark.parametrize("name", [EXPERIMENT, SEARCHER, *OPTUNA])
def test_a_state_file_cut_short_is_replaced_by_the_kept_copy(study, name):
    cut_short(study / "ray" / name)
    assert ray_state.unreadable(study / "ray") == [study / "ray" / name]
    assert ray_state.repair(study) == [name]
    assert json.loads((study / "ray" / EXPERIMENT).read_text())["runner_data"] == {"epoch": 7}
    for searcher in (SEARCHER, *OPTUNA):
        assert pickle.loads((study / "ray" / searcher).read_bytes()) == {"_counter": 7}
    assert not list((study / "ray").glob(".*"))  # no temporary file left


def test_between_the_renames_of_a_keep_the_previous_copy_is_taken(study):
    kept = study / ray_state.KEPT_DIR
    os.replace(kept, kept.with_name(kept.name + ".old"))  # `keep` killed after its first rename
    cut_short(study / "ray" / EXPERIMENT)
    assert ray_state.repair(study) == [EXPERIMENT]
    assert ray_state.unreadable(study / "ray") == []


def test_without_a_whole_copy_the_resume_is_refused_and_names_the_file(study):
    cut_short(study / "ray" / EXPERIMENT)
    cut_short(study / ray_state.KEPT_DIR / EXPERIMENT)
    with pytest.raises(SeqrepError) as err:
        ray_state.repair(study)
    assert str(err.value) == (
        f"--resume: Ray Tune's run state {study / 'ray' / EXPERIMENT} is unreadable (its driver was killed "
        f"while writing it) and seqrep kept no whole copy in {study / ray_state.KEPT_DIR}; start the study "
        "again under another --name")
    assert (study / "ray" / EXPERIMENT).exists()  # nothing removed


def test_a_missing_experiment_state_is_taken_from_the_kept_copy(study):
    (study / "ray" / EXPERIMENT).unlink()  # the driver was killed before Tune's copy wrote it
    assert ray_state.repair(study) == [EXPERIMENT]
    assert json.loads((study / "ray" / EXPERIMENT).read_text())["runner_data"] == {"epoch": 7}


def test_without_an_experiment_state_or_a_copy_the_resume_is_refused_and_nothing_changes(study):
    (study / "ray" / EXPERIMENT).unlink()
    (study / ray_state.KEPT_DIR / EXPERIMENT).unlink()
    before = sorted(f.name for f in (study / "ray").iterdir())
    with pytest.raises(SeqrepError) as err:
        ray_state.repair(study)
    assert str(err.value) == (
        f"--resume: {study / 'ray'} holds no Ray Tune run state (experiment_state-*.json) and seqrep kept no "
        f"copy in {study / ray_state.KEPT_DIR}; start the study again under another --name")
    assert sorted(f.name for f in (study / "ray").iterdir()) == before


def test_the_keeper_copies_each_new_save_once(tmp_path):
    staging, study = tmp_path / "staging", tmp_path / "study"
    keeper = ray_state.StateKeeper(study)
    trials = [SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))]
    keeper.on_step_end(iteration=1, trials=trials)  # no save yet
    assert not (study / ray_state.KEPT_DIR).exists()
    save(staging, epoch=1)
    keeper.on_step_end(iteration=2, trials=trials)
    kept = study / ray_state.KEPT_DIR / EXPERIMENT
    assert json.loads(kept.read_text())["runner_data"] == {"epoch": 1}
    kept.write_text("not copied again")
    keeper.on_step_end(iteration=3, trials=trials)  # the same save
    assert kept.read_text() == "not copied again"
    save(staging, epoch=2)
    os.utime(staging / EXPERIMENT, ns=(1, 1))  # a new save, whatever the clock's resolution
    keeper.on_step_end(iteration=4, trials=trials)
    assert json.loads(kept.read_text())["runner_data"] == {"epoch": 2}
    assert sorted(f.name for f in study.iterdir()) == [ray_state.KEPT_DIR]
    assert pickle.loads(pickle.dumps(keeper)).study == study  # Tuner pickles its callbacks


def test_a_copy_that_cannot_be_made_is_warned_of_once_and_the_study_goes_on(tmp_path, caplog):
    staging, study = tmp_path / "staging", tmp_path / "study"
    save(staging, epoch=1)
    study.write_text("a file where the study folder should be")
    keeper = ray_state.StateKeeper(study)
    trials = [SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))]
    with caplog.at_level(logging.WARNING, logger="seqrep.ray_state"):
        keeper.on_step_end(iteration=1, trials=trials)
        os.utime(staging / EXPERIMENT, ns=(1, 1))
        keeper.on_step_end(iteration=2, trials=trials)
    assert [r.getMessage().startswith(f"could not keep a copy of Ray Tune's run state in {study / ray_state.KEPT_DIR}: ")
            for r in caplog.records] == [True]


def test_tunes_silent_restart_becomes_an_error_only_while_refused():
    log = logging.getLogger("ray.tune.execution.tune_controller")
    with ray_state.refuse_restart(), pytest.raises(ray_state.RestoreRefused) as err:
        try:
            raise KeyError("runner_data")
        except KeyError:
            log.exception("Failed to restore the run state.")
    assert str(err.value) == ("--resume: Ray Tune could not restore the study's run state (KeyError('runner_data')) "
                              "and would start it over; start the study again under another --name")
    try:
        raise KeyError("runner_data")
    except KeyError:
        log.exception("Failed to restore the run state.")  # outside: only logged


def test_the_result_grids_fetch_notice_goes_to_the_debug_log_only_while_a_study_runs(monkeypatch):
    ray_log, ours = logging.getLogger("ray.tune.analysis.experiment_analysis"), logging.getLogger("seqrep.ray_state")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    levels = {logger: logger.level for logger in (ray_log, ours)}
    for logger in levels:  # handlers of their own: a started Ray stops its loggers' propagation
        monkeypatch.setattr(logger, "propagate", False)
        monkeypatch.setattr(logger, "handlers", [handler])
        logger.setLevel(logging.DEBUG)
    notice = "Failed to fetch metrics for 1 trial(s):\n- a_00001: FileNotFoundError('result.json')"
    try:
        with ray_state.quiet_result_grid():
            ray_log.warning(notice)
            ray_log.warning("another warning")
        ray_log.warning(notice)  # outside: as Ray logs it
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
    assert [(r.name, r.levelno, r.getMessage()) for r in records] == [
        ("seqrep.ray_state", logging.DEBUG, f"Ray Tune's ResultGrid (not used by seqrep): {notice}"),
        ("ray.tune.analysis.experiment_analysis", logging.WARNING, "another warning"),
        ("ray.tune.analysis.experiment_analysis", logging.WARNING, notice)]
