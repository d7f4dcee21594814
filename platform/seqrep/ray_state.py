"""Ray Tune's run state of a study, kept whole across a killed driver.

Tune writes its run state (`experiment_state-*.json`, the searcher's and the callbacks' state) to a
staging folder of the driver, complete, and then copies that folder into `<study>/ray/` in a
background thread, file by file and not atomically. A driver SIGKILLed during that copy leaves a
truncated file there (the experiment state of a cohort study is ~1 MB: it holds each member's
latest epochs), and on `--resume` Tune fails to read it, logs "Failed to restore the run state",
and silently starts the experiment over on top of the old one.

So seqrep keeps a copy of its own: `StateKeeper`, a Tune callback, copies the staging files into
`<study>/ray-state/` after each save (a new folder swapped in by renames, so the copy is always one
whole save), and `repair`, run before a resume, puts that copy back when a state file in
`<study>/ray/` cannot be read, or the experiment state is missing there. `refuse_restart` turns Tune's
silent restart, for any other reason, into an error (`RestoreRefused`: no trial has run again).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

from ray import tune
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.search_generator import SearchGenerator
from ray.tune.search.searcher import Searcher

from seqrep import studydir
from seqrep.errors import SeqrepError
from seqrep.logfilters import filtering
from seqrep.paths import atomic_write

log = logging.getLogger(__name__)

KEPT_DIR = "ray-state"  # in the study folder, beside Ray's
EXPERIMENT_STATE = TuneController.CKPT_FILE_TMPL.format("*")  # JSON; the others are pickles
STATE_FILES = (EXPERIMENT_STATE, *(owner.CKPT_FILE_TMPL.format("*")
                                   for owner in (BasicVariantGenerator, Searcher, SearchGenerator, CallbackList)))


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            json.load(f) if fnmatch.fnmatch(path.name, EXPERIMENT_STATE) else pickle.load(f)
        return True
    except Exception:  # noqa: BLE001 - whatever a truncated file raises
        return False


def state_files(folder: Path) -> list[Path]:
    return sorted(f for pattern in STATE_FILES for f in Path(folder).glob(pattern))


def unreadable(folder: Path) -> list[Path]:
    """The run-state files in `folder` that Tune could not read."""
    return [f for f in state_files(folder) if not _readable(f)]


class RestoreRefused(SeqrepError):
    """Ray Tune could not restore a study's run state; no trial of the study has run again."""


def repair(study: Path) -> list[str]:
    """Make `<study>/ray/`'s run state whole before Tune restores it: each unreadable file, and the
    experiment state when it is missing, is taken from the kept copy; the names taken (none when
    all were whole). A SeqrepError, before anything is changed, when there is no whole copy."""
    ray_dir, kept = Path(study) / studydir.RAY_DIR, Path(study) / KEPT_DIR
    bad = unreadable(ray_dir)
    missing = not any(ray_dir.glob(EXPERIMENT_STATE))
    if not bad and not missing:
        return []
    # `keep` swaps folders by renames: between two of them only the previous copy, `.old`, exists
    whole = [d for d in (kept, _old(kept)) if any(d.glob(EXPERIMENT_STATE)) and not unreadable(d)]
    if not whole and bad:
        raise SeqrepError(f"--resume: Ray Tune's run state {bad[0]} is unreadable (its driver was killed while "
                          f"writing it) and seqrep kept no whole copy in {kept}; start the study again under "
                          "another --name")
    if not whole:
        raise SeqrepError(f"--resume: {ray_dir} holds no Ray Tune run state ({EXPERIMENT_STATE}) and seqrep kept "
                          f"no copy in {kept}; start the study again under another --name")
    for f in bad:
        f.unlink()
    taken = {f.name for f in bad}
    for f in state_files(whole[0]):
        if missing and fnmatch.fnmatch(f.name, EXPERIMENT_STATE):
            taken.add(f.name)
        atomic_write(ray_dir / f.name, lambda tmp, f=f: shutil.copyfile(f, tmp))
    return sorted(taken)


class StateKeeper(tune.Callback):
    """After each run-state save of Tune, copy the staging folder's state files to
    `<study>/ray-state/` (module docstring). Costs one `stat` per Tune step and one copy of the
    state (~1 MB) per save, which Tune makes at most once per report interval."""

    def __init__(self, study: Path):
        self.study = Path(study)
        self._staging: Path | None = None
        self._saved_ns = 0
        self._warned = False

    def __getstate__(self):  # Tuner pickles its callbacks; the staging folder is this driver's
        return {"study": self.study}

    def __setstate__(self, state):
        self.__init__(state["study"])

    def on_step_end(self, iteration, trials, **info):
        if self._staging is None:
            if not trials:
                return
            self._staging = Path(trials[0].storage.experiment_driver_staging_path)
        try:
            saved_ns = max(f.stat().st_mtime_ns for f in self._staging.glob(EXPERIMENT_STATE))
        except (ValueError, OSError):  # no save yet
            return
        if saved_ns != self._saved_ns:
            self._saved_ns = saved_ns
            try:
                keep(self._staging, self.study / KEPT_DIR)
            except OSError as err:  # a copy that could not be made must not stop the study
                if not self._warned:
                    log.warning("could not keep a copy of Ray Tune's run state in %s: %s", self.study / KEPT_DIR, err)
                    self._warned = True


def keep(staging: Path, kept: Path) -> None:
    """Copy the state files of `staging` to the folder `kept`, replacing it whole."""
    new, old = kept.with_name(kept.name + ".new"), _old(kept)
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    new.mkdir(parents=True)
    for f in state_files(staging):
        shutil.copyfile(f, new / f.name)
    if kept.exists():
        os.replace(kept, old)
    os.replace(new, kept)
    shutil.rmtree(old, ignore_errors=True)


def _old(kept: Path) -> Path:
    return kept.with_name(kept.name + ".old")


class _RefuseRestart(logging.Filter):
    def filter(self, record):
        if record.getMessage() == "Failed to restore the run state.":
            cause = record.exc_info[1] if record.exc_info else None
            raise RestoreRefused(f"--resume: Ray Tune could not restore the study's run state ({cause!r}) and "
                                 "would start it over; start the study again under another --name")
        return True


class _ResultGridNotice(logging.Filter):
    """Tune's ResultGrid reads every trial's result.json / progress.csv when a run ends, and after a
    resume warned "Failed to fetch metrics" for trials whose folders Ray was rewriting, although
    seqrep's summary and MLflow runs were complete (it reads neither the ResultGrid nor those
    frames): the notice goes to seqrep's debug log instead."""

    def filter(self, record):
        message = record.getMessage()
        if message.startswith("Failed to fetch metrics for "):
            log.debug("Ray Tune's ResultGrid (not used by seqrep): %s", message)
            return False
        return True


@contextlib.contextmanager
def quiet_result_grid():
    """While a Tuner runs, drop Tune's ResultGrid notice "Failed to fetch metrics" (`_ResultGridNotice`)."""
    with filtering("ray.tune.analysis.experiment_analysis", _ResultGridNotice()):
        yield


@contextlib.contextmanager
def refuse_restart():
    """While a Tuner runs, Tune's "Failed to restore the run state" (after which it would start the
    experiment over) raises a SeqrepError instead. Only a resumed Tuner restores: around a new
    study's the filter never fires."""
    with filtering("ray.tune.execution.tune_controller", _RefuseRestart()):
        yield
