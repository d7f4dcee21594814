"""The progress view of `search` and `reproduce`: plain lines when not on a terminal, an estimate of
what is left from the epoch budgets, and Ray Tune's table only with --verbose."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest

from seqrep import progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_only_when_a_count_or_the_best_value_changes():
    out, clock = io.StringIO(), Clock()
    view = progress.View(2, [100, 300], stream=out, interactive=False, clock=clock)
    view.start_study("a", "valid_nll", "min")
    view.update(progress.Counts(pending=2))
    clock.now += 5
    view.update(progress.Counts(pending=2))  # only the clock moved: no line
    view.update(progress.Counts(running=1, pending=1, epochs=10, best=1.5))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0] == ("seqrep: study 1/2 a · trials 0 done, 0 running, 0 pending, 0 failed · best valid_nll – · "
                        "elapsed 0s · left ?")
    assert lines[2].startswith("seqrep: study 1/2 a · trials 0 done, 1 running, 1 pending, 0 failed · best valid_nll 1.5 ·")


def test_the_estimate_weighs_studies_by_their_epoch_budget_and_skips_start_up():
    clock = Clock()
    view = progress.View(2, [100, 300], stream=io.StringIO(), interactive=False, clock=clock)
    view.start_study("a", "valid_nll", "min")
    clock.now += 20  # Ray starting: not training time
    view.update(progress.Counts(running=2))
    clock.now += 10
    view.update(progress.Counts(done=2, epochs=100))
    view.end_study()  # 100 of 400 epochs in 10 s of training
    view.start_study("b", "valid_nll", "min")
    clock.now += 5
    view.update(progress.Counts(running=1, epochs=0))
    clock.now += 20
    view.update(progress.Counts(running=1, epochs=50))  # 150 of 400 epochs in 30 s: 250 left at 5 epochs/s
    assert view.fraction() == pytest.approx(150 / 400)
    assert view.left_s() == pytest.approx(30 * 250 / 150)
    assert "left ~50s" in view.line()
    assert "elapsed 55s" in view.line()


def test_studies_running_at_once_share_one_line_and_the_estimate():
    out, clock = io.StringIO(), Clock()
    view = progress.View(3, [100, 300, 100], stream=out, interactive=False, clock=clock)
    view.start_study("a", "valid_nll", "min", 100)
    view.start_study("b", "valid_error", "min", 300)
    clock.now += 10  # start-up: not training time
    view.update(progress.Counts(running=2, epochs=20, best=1.5), "a")
    view.update(progress.Counts(running=1, pending=3, epochs=40), "b")
    assert view.line(with_time=False) == ("studies 0 done, 2 running, 1 waiting of 3 · trials 0 done, 3 running, "
                                          "3 pending, 0 failed")
    clock.now += 20
    view.update(progress.Counts(done=2, epochs=100), "a")
    view.end_study("a")  # 100 + 40 of 500 epochs in 20 s of training
    assert view.fraction() == pytest.approx(140 / 500)
    assert view.left_s() == pytest.approx(20 * 360 / 140)
    # one study left running: its own line again, numbered in the order the studies started
    assert view.line(with_time=False) == ("study 2/3 b · trials 0 done, 1 running, 3 pending, 0 failed · "
                                          "best valid_error –")
    assert out.getvalue().splitlines()[-1].startswith("seqrep: studies 0 done, 2 running, 1 waiting of 3 · trials 2 done")
    view.start_study("c", "valid_nll", "min", 100)
    view.update(progress.Counts(done=1, failed=1, running=1, epochs=30), "c")
    # the ended study's 2 trials stay counted: the count never goes back
    assert view.line(with_time=False) == ("studies 1 done, 2 running, 0 waiting of 3 · trials 3 done, 2 running, "
                                          "3 pending, 1 failed")


def test_verbose_gives_ray_tunes_table_and_the_default_seqreps_view(tmp_path):
    from ray.tune import CLIReporter

    from seqrep import launch, studies

    options = studies.StudyOptions(trials=2, storage=str(tmp_path), tracking_uri=f"sqlite:///{tmp_path}/m.db")
    plan = studies.plan("table7-nn-toy", "toy", options)
    assert not isinstance(launch._reporter(plan, None), CLIReporter)
    options.verbose = True
    assert isinstance(launch._reporter(plan, None), CLIReporter)


def test_a_failing_display_is_logged_once_and_never_raised(monkeypatch):
    """Ray Tune asks the reporter a last time outside its cleanup: a raise there left the study's
    trial actors holding their slots (and a table's other studies waiting for them)."""
    from ray.tune import CLIReporter

    from seqrep import reporters

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    monkeypatch.setattr(logging.getLogger("seqrep.reporters"), "handlers", [handler])

    def fail(self, *args):
        raise KeyError("transfer")

    monkeypatch.setattr(CLIReporter, "report", fail)
    monkeypatch.setattr(CLIReporter, "should_report", fail)
    shown = reporters.reporter("valid_error", "min", 15, 8, "s", parameters=["transfer"], verbose=True)
    assert isinstance(shown, CLIReporter)
    for _ in range(3):
        assert shown.should_report([], done=True) is False
        assert shown.report([], True) is None
    assert [r.getMessage() for r in records] == [
        "the progress display failed (the study goes on without it): KeyError: 'transfer'"]


@pytest.mark.integration
def test_verbose_shows_a_cohort_study_with_its_cohorts_as_ray_tunes_trials(tmp_path):
    """Each cohort is one Ray Tune trial whose config is its index (not the space's parameters,
    which the trial table asked for and failed on, 2026-12-04)."""
    done = subprocess.run([sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy",
                           "--trials", "4", "--max-epochs", "2", "--verbose", "--storage", str(tmp_path / "s"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("== Status ==")[-1]
    assert "|   cohort |   epoch |   valid_nll |" in table
    assert "(3 TERMINATED)" in table
    assert "4 trials (4 completed)" in done.stdout + done.stderr
    assert "progress display failed" not in done.stdout + done.stderr


@pytest.mark.integration
def test_a_non_interactive_search_prints_plain_progress_lines(tmp_path):
    done = subprocess.run([sys.executable, "-m", "seqrep.cli", "search", "table7-nn-toy", "--dataset", "toy",
                           "--trials", "2", "--max-epochs", "3", "--storage", str(tmp_path / "s"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("seqrep: study 1/1 table7-nn-toy-toy · ")]
    assert lines and "trials 2 done, 0 running, 0 pending, 0 failed" in lines[-1]
    assert len(lines) == len(set(line.split(" · elapsed")[0] for line in lines))  # one line per change
    assert "== Status ==" not in done.stdout + done.stderr
    assert "Token authentication" not in done.stdout + done.stderr
