"""One compact progress view for `seqrep search` and `seqrep reproduce`, instead of Ray's trial table.

    study 2/6 table7-dn-toy-toy · trials 3 done, 2 running, 3 pending, 0 failed · best valid_nll 1.664 ·
    elapsed 1m23s · left ~4m10s

On a terminal the line updates in place (`rich`'s live display, on stderr); elsewhere (a log file,
CI) it is printed as one plain line whenever a count or the best value changes, never for the
clock alone. The estimate of what is left weighs every study by its epoch budget (trials × epochs
per trial; a finished trial counts its whole budget, a running one the epochs it reached) and
assumes the rest goes at the pace so far. Ray Tune feeds the view through the reporter in
`seqrep.launch`; this module knows nothing of Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
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


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class View:
    """The progress of a command that runs `studies` studies one after another."""

    def __init__(self, studies: int, budgets: list[int] | None = None, stream: IO[str] | None = None,
                 interactive: bool | None = None, clock=time.monotonic):
        self.studies = studies
        self.budgets = list(budgets) if budgets else [1] * studies  # epoch budget of each study
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.started = clock()
        self.index = 0  # 1-based number of the current study
        self.name, self.metric, self.mode = "", "", "min"
        self.counts = Counts()
        self.budget_done = 0  # epoch budget of the studies already done
        self.training_s = 0.0  # time spent with trials running, in the studies already done
        self._since: float | None = None  # when the current study's first trial started
        self._last_plain = ""
        self._live = None

    # --- what the command tells the view ---------------------------------------------------

    def start_study(self, name: str, metric: str, mode: str) -> None:
        self.index += 1
        self.name, self.metric, self.mode = name, metric, mode
        self.counts = Counts()
        self._show()

    def update(self, counts: Counts) -> None:
        if self._since is None and (counts.running or counts.done or counts.failed):
            self._since = self.clock()
        self.counts = counts
        self._show()

    def end_study(self) -> None:
        if self._live is not None:  # keep each study's last state in the scrollback
            self._live.console.print(self.line())
        self.budget_done += self.budgets[self.index - 1] if self.index else 0
        if self._since is not None:
            self.training_s += self.clock() - self._since
        self._since = None

    # --- what it shows ---------------------------------------------------------------------

    def fraction(self) -> float:
        total = sum(self.budgets) or 1
        running = self._since is not None  # an ended study's epochs are in budget_done already
        current = min(self.counts.epochs, self.budgets[self.index - 1]) if self.index and running else 0
        return min(1.0, (self.budget_done + current) / total)

    def left_s(self) -> float | None:
        """Seconds left at the pace trials have trained so far (start-up time excluded); None
        before anything was measured."""
        done = self.fraction()
        training = self.training_s + (self.clock() - self._since if self._since is not None else 0.0)
        return None if done <= 0 or training <= 0 else training * (1 - done) / done

    def line(self, with_time: bool = True) -> str:
        c = self.counts
        best = "–" if c.best is None or not math.isfinite(c.best) else f"{c.best:.4g}"
        parts = [f"study {self.index}/{self.studies} {self.name}",
                 f"trials {c.done} done, {c.running} running, {c.pending} pending, {c.failed} failed",
                 f"best {self.metric} {best}"]
        if with_time:
            left = self.left_s()
            parts += [f"elapsed {_clock(self.clock() - self.started)}",
                      f"left ~{_clock(left)}" if left is not None else "left ?"]
        return " · ".join(parts)

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
