"""One compact progress view for `seqrep search` and `seqrep reproduce`, instead of Ray's trial table.

    study 2/6 table7-dn-toy-toy · trials 3 done, 2 running, 3 pending, 0 failed · best valid_nll 1.664 ·
    elapsed 1m23s · left ~4m10s

or, while several studies run at once (`seqrep reproduce`), one line for all of them:

    studies 1 done, 3 running, 2 waiting of 6 · trials 9 done, 6 running, 17 pending, 0 failed ·
    elapsed 1m23s · left ~4m10s

On a terminal the line updates in place (`rich`'s live display, on stderr); elsewhere (a log file,
CI) it is printed as one plain line whenever a count or the best value changes, never for the
clock alone. The estimate of what is left weighs every study by its epoch budget (trials × epochs
per trial; a finished trial counts its whole budget, a running one the epochs it reached) and
assumes the rest goes at the pace so far (time while some study's trials run). Ray Tune feeds the
view through the reporter in `seqrep.launch`; this module knows nothing of Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import threading
import time
from typing import IO, Iterator


@dataclasses.dataclass(frozen=True)
class Counts:
    """What one study's trials are doing, as Ray Tune last told."""

    done: int = 0  # finished: completed, diverged or stopped
    running: int = 0
    pending: int = 0
    failed: int = 0  # errored
    epochs: int = 0  # epochs reached, summed over trials (a finished trial: its whole budget)
    best: float | None = None  # best selection metric so far


def _trials(c: Counts) -> str:
    return f"trials {c.done} done, {c.running} running, {c.pending} pending, {c.failed} failed"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


@dataclasses.dataclass
class _Study:
    """One study the view follows: its place in the command, its epoch budget and counts."""

    index: int
    name: str
    metric: str
    budget: int
    counts: Counts = dataclasses.field(default_factory=Counts)
    training: bool = False  # a trial has run (start-up before that is not training time)


class View:
    """The progress of a command that runs `studies` studies, one after another or several at once.

    One study running: `study i/N <name> · trials … · best <metric> … · elapsed · left`. Several
    (`seqrep reproduce` runs a table's studies concurrently): `studies d done, r running of N ·
    trials … · elapsed · left`, the trials summed over the command's studies (an ended study's
    stay counted as done or failed, so the count only grows). Thread-safe: each
    study's Ray Tune loop feeds the view from its own thread.
    """

    def __init__(self, studies: int, budgets: list[int] | None = None, stream: IO[str] | None = None,
                 interactive: bool | None = None, clock=time.monotonic):
        self.studies = studies
        self.budgets = list(budgets) if budgets else [1] * studies  # epoch budget of each study, in start order
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.started = clock()
        self.index = 0  # how many studies have started
        self.ended = 0
        self.running: dict[str, _Study] = {}  # in start order
        self.last: _Study | None = None  # the study shown when none runs
        self.budget_done = 0  # epoch budget of the studies already done
        self.ended_trials = Counts()  # done and failed trials of the studies already done
        self.training_s = 0.0  # time with some study's trials running, up to _busy_since
        self._busy_since: float | None = None
        self._last_plain = ""
        self._live = None
        self._lock = threading.RLock()

    # --- what the command tells the view ---------------------------------------------------

    def start_study(self, name: str, metric: str, mode: str, budget: int | None = None) -> None:
        with self._lock:
            self.index += 1
            if budget is None:
                budget = self.budgets[self.index - 1] if self.index <= len(self.budgets) else 1
            self.running[name] = self.last = _Study(self.index, name, metric, budget)
            self._show()

    def update(self, counts: Counts, name: str | None = None) -> None:
        with self._lock:
            study = self._study(name)
            if study is None:
                return
            if not study.training and (counts.running or counts.done or counts.failed):
                study.training = True
                if self._busy_since is None:
                    self._busy_since = self.clock()
            study.counts = counts
            self._show()

    def end_study(self, name: str | None = None) -> None:
        with self._lock:
            study = self._study(name)
            if study is None:
                return
            if self._live is not None:  # keep each study's last state in the scrollback
                self._live.console.print(self._single(study))
            del self.running[study.name]
            self.ended += 1
            self.budget_done += study.budget
            ended = self.ended_trials
            self.ended_trials = Counts(done=ended.done + study.counts.done, failed=ended.failed + study.counts.failed)
            self.last = study
            if self._busy_since is not None and not any(s.training for s in self.running.values()):
                self.training_s += self.clock() - self._busy_since
                self._busy_since = None

    def training(self, name: str) -> bool:
        """Whether study `name` has started in the view and one of its trials has run."""
        with self._lock:
            study = self.running.get(name)
            return study is not None and study.training

    def _study(self, name: str | None) -> _Study | None:
        if name is not None:
            return self.running.get(name)
        return next(reversed(self.running.values()), None)  # the latest started: one study at a time

    # --- what it shows ---------------------------------------------------------------------

    def fraction(self) -> float:
        with self._lock:
            total = sum(self.budgets) or 1
            current = sum(min(s.counts.epochs, s.budget) for s in self.running.values() if s.training)
            return min(1.0, (self.budget_done + current) / total)

    def left_s(self) -> float | None:
        """Seconds left at the pace trials have trained so far (start-up time excluded); None
        before anything was measured."""
        with self._lock:
            done = self.fraction()
            training = self.training_s + (self.clock() - self._busy_since if self._busy_since is not None else 0.0)
            return None if done <= 0 or training <= 0 else training * (1 - done) / done

    def line(self, with_time: bool = True) -> str:
        with self._lock:
            if len(self.running) <= 1:
                study = next(iter(self.running.values()), self.last)
                return self._single(study, with_time) if study is not None else ""
            counts = [self.ended_trials, *(s.counts for s in self.running.values())]
            summed = Counts(**{f: sum(getattr(c, f) for c in counts)
                               for f in ("done", "running", "pending", "failed", "epochs")})
            waiting = self.studies - self.ended - len(self.running)
            parts = [f"studies {self.ended} done, {len(self.running)} running, {waiting} waiting of {self.studies}",
                     _trials(summed)]
            return " · ".join(parts + (self._times() if with_time else []))

    def _single(self, study: _Study, with_time: bool = True) -> str:
        c = study.counts
        best = "–" if c.best is None or not math.isfinite(c.best) else f"{c.best:.4g}"
        parts = [f"study {study.index}/{self.studies} {study.name}", _trials(c), f"best {study.metric} {best}"]
        return " · ".join(parts + (self._times() if with_time else []))

    def _times(self) -> list[str]:
        left = self.left_s()
        return [f"elapsed {_clock(self.clock() - self.started)}", f"left ~{_clock(left)}" if left is not None else "left ?"]

    def _show(self) -> None:
        if self.interactive:
            if self._live is None:
                self._start_live()
            self._live.update(self.line())
            return
        key = self.line(with_time=False)
        if key != self._last_plain:  # one plain line per change of a count or the best value
            self._last_plain = key
            print(f"seqrep: {self.line()}", file=self.stream, flush=True)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live("", console=Console(file=self.stream), refresh_per_second=2, transient=False,
                          get_renderable=lambda: self.line())
        self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self.line())
            self._live.stop()
            self._live = None


_ACTIVE: list[View] = []


@contextlib.contextmanager
def showing(view: View) -> Iterator[View]:
    """Make `view` the one Ray Tune's reporter feeds while the block runs."""
    _ACTIVE.append(view)
    try:
        yield view
    finally:
        _ACTIVE.remove(view)
        view.close()


def active() -> View | None:
    """The view of the command running in this process, if it shows one."""
    return _ACTIVE[-1] if _ACTIVE else None
