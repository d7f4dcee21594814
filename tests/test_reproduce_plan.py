"""`seqrep reproduce TABLE` without --dataset rebuilds what the data directory allows."""

import pytest

from seqrep import reproduce, tables
from seqrep.errors import SeqrepError


def test_whole_table_skips_data_sets_that_are_absent(tmp_path, capsys):
    needed = tables.studies_for("table7")
    kept = reproduce._available_studies("table7", needed, str(tmp_path))
    # toy is generated; sarcos needs files an empty data directory lacks
    assert kept == [(space, dataset) for space, dataset in needed if dataset == "toy"]
    assert len(kept) == 6
    out = capsys.readouterr().out
    assert out.count("skipping sarcos") == 1
    assert str(tmp_path / "sarcos" / "sarcos_inv.mat") in out


def test_whole_table_with_no_data_at_all_names_what_to_fetch(tmp_path):
    needed = tables.studies_for("table11")
    with pytest.raises(SeqrepError, match=r"data set 'tidigits' needs .*which is not in the data directory"):
        reproduce._available_studies("table11", needed, str(tmp_path))


def test_a_space_that_searches_nothing_runs_one_trial_whatever_trials_says(tmp_path, capsys):
    """Its trials would repeat one run: a trial's seed is a hash of the study seed and its config."""
    from seqrep import launch, results, searchers, studies

    studies._say_fixed.cache_clear()
    options = studies.StudyOptions(storage=str(tmp_path / "s"), seed=0, trials=3)
    fawn = studies.plan("table7-fawn-vb-toy", "toy", options)
    assert fawn.trials == 1 and launch.runs(fawn) == 1
    assert capsys.readouterr().out == (
        "seqrep: table7-fawn-vb-toy searches nothing (a fixed configuration): 1 trial, not 3, since its trials "
        "would repeat one run (same config, same seed); --repeats R runs it with R seeds\n")
    assert studies.plan("table7-fawn-vb-toy", "toy", options).trials == 1  # a repeat, or another data set
    assert capsys.readouterr().out == ""  # is not told again
    drawn = searchers.draw(searchers.to_tune(fawn.space), 0, 3)  # what three trials would have run
    assert len({results.trial_seed(0, c) for c in drawn}) == 1 and drawn[0] == drawn[1] == drawn[2]
    nn = studies.plan("table7-nn-toy", "toy", options)
    assert nn.trials == 3 and capsys.readouterr().out == ""
    assert studies.plan("table7-fawn-vb-toy", "toy", studies.StudyOptions(storage=str(tmp_path / "s"))).trials == 1
    assert capsys.readouterr().out == ""  # the space's own count: nothing to say


def test_a_grid_that_searches_nothing_else_runs_each_value_once(tmp_path, capsys):
    import os

    from seqrep import launch, studies

    if not os.environ.get("SEQREP_DATA"):
        pytest.skip("SEQREP_DATA is not set: planning a table8 study needs the UCI Boston housing data")
    studies._say_fixed.cache_clear()
    grid = studies.plan("table8-fawn-vb", "uci-boston", studies.StudyOptions(storage=str(tmp_path / "s"), trials=2))
    assert grid.trials == 1 and launch.runs(grid) == 10  # the space's ten splits
    assert "searches nothing (a fixed configuration): 1 trial per grid value, not 2" in capsys.readouterr().out


def test_a_study_records_the_commit_of_the_code_its_process_loaded(tmp_path, monkeypatch):
    """Read when the first study is planned: a commit made while a long table runs is not the code
    its later studies run, so their records must not name it."""
    import subprocess

    from seqrep import studies

    studies.git_commit.cache_clear()
    p = studies.plan("table7-nn-toy", "toy", studies.StudyOptions(storage=str(tmp_path / "s")))
    first = studies.git_commit()
    later = subprocess.CompletedProcess([], 0, stdout="f" * 40 + "\n", stderr="")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: later)  # someone commits meanwhile
    assert p.record()["git_commit"] == first == studies.git_commit() != "f" * 40
    studies.git_commit.cache_clear()
    assert studies.git_commit() == "f" * 40  # (a new process would read the new commit)
    studies.git_commit.cache_clear()
