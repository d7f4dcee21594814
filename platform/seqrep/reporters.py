"""What Ray Tune shows while a study runs: seqrep's one-line view (`seqrep.progress`), or with
`--verbose` Ray Tune's own trial table.

Neither may raise. Ray Tune asks the reporter a last time after the trials have ended and before
it releases their actors (`ray.tune.tune.run`: that call is outside its cleanup's `try`), so an
error there ended the study with its reused trial actors still holding their slots, and a
table's other studies waited for those slots without end (`seqrep reproduce table10 --verbose`:
the trial table asked a cohort trial, whose config is its cohort's index, for the space's
parameters). A failing display is logged once and the study goes on without it.
"""

from __future__ import annotations

import logging
from typing import Any

from seqrep import progress
from seqrep.method import is_finite

log = logging.getLogger(__name__)


def reporter(metric: str, mode: str, max_epochs: int, total: int, study: str, *, parameters: list[str],
             sizes: list[int] | None = None, verbose: bool = False):
    """Ray Tune's table of the trials (`verbose`: columns `parameters`, or the cohort's index for a
    study of cohorts, `sizes` giving each cohort's members), else a feed of the active view."""
    from ray.tune import CLIReporter

    if verbose:
        return _never_raising(CLIReporter)(
            metric_columns={"epoch": "epoch", metric: metric},
            parameter_columns=["cohort"] if sizes is not None else parameters[:6],
            max_report_frequency=30,  # sort_by_metric would crash on trials stopped before any result
        )
    return _view_reporter(metric, mode, max_epochs, total, sizes, study)


def _never_raising(cls):
    """`cls`, a Ray Tune progress reporter, whose failures are logged (the first one) instead of raised."""

    class NeverRaising(cls):
        _failed = False

        def should_report(self, trials, done=False):
            return self._guarded(super().should_report, trials, done) is True

        def report(self, trials, done, *sys_info):
            self._guarded(super().report, trials, done, *sys_info)

        def _guarded(self, call, *args) -> Any:
            try:
                return call(*args)
            except Exception as err:  # noqa: BLE001 - see the module's docstring
                if not self._failed:
                    log.warning("the progress display failed (the study goes on without it): %s: %s",
                                type(err).__name__, err)
                self._failed = True
                return None

    NeverRaising.__name__ = NeverRaising.__qualname__ = f"NeverRaising{cls.__name__}"
    return NeverRaising


def _view_reporter(metric: str, mode: str, max_epochs: int, total: int, sizes: list[int] | None, study: str):
    from ray.tune import ProgressReporter

    class ViewReporter(ProgressReporter):
        """Feeds the active `progress.View` with the trials' counts (it holds no view itself, so a
        study restored from `tuner.pkl` feeds the view of the command that resumed it)."""

        def should_report(self, trials, done=False):
            return progress.active() is not None

        def report(self, trials, done, *sys_info):
            view = progress.active()
            if view is not None:
                view.update(trial_counts(trials, metric, mode, max_epochs, total, sizes), study)

    return _never_raising(ViewReporter)()


def trial_counts(trials, metric: str, mode: str, max_epochs: int, total: int,
                 sizes: list[int] | None = None) -> progress.Counts:
    """Ray Tune's trials -> the view's counts (trials not yet generated count as pending); with
    cohorts (`sizes`: members per cohort) a cohort trial counts as its members."""
    done = running = failed = epochs = 0
    best = None
    for trial in trials:
        result = trial.last_result or {}
        n = sizes[int(trial.config["cohort"])] if sizes is not None else 1
        if trial.status == "TERMINATED":
            done, epochs = done + n, epochs + n * max_epochs
        elif trial.status == "ERROR":
            failed, epochs = failed + n, epochs + n * max_epochs
        else:
            running += n * (trial.status == "RUNNING")
            epochs += n * int(result.get("epoch", 0) or 0)
        value = (trial.metric_analysis.get(metric) or {}).get(mode)
        if is_finite(value) and (best is None or (value < best if mode == "min" else value > best)):
            best = value
    return progress.Counts(done=done, running=running, pending=max(0, total - done - running - failed),
                           failed=failed, epochs=epochs, best=best)
