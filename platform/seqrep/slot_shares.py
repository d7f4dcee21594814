"""Shares of the cluster's trial slots among a table's studies that run at once (`seqrep reproduce`).

Every trial process starts Python, Ray's worker and torch (2-4 s on a busy 2-core machine); a
study's trials reuse their process (Ray Tune's `reuse_actors`), a new study needs new ones. With
every study free to take every slot, Ray often handed all of them to one study, whose trials
then started their processes together while the other studies waited, and the table paid each
study's start-up with every core idle: Table 10 on UCR CBF (4 studies, 2 slots, 2026-12-04) took
22.6-32.3 s over six runs, with 5 to 9 trial processes. A study limited to its share of the slots
(`seqrep.reproduce._Turns.share`: the slots over the studies not ended, rounded up) keeps one
process per slot it holds, and its start overlaps the others' training; the share grows as
studies end, and `SharedSlots` holds a study of long trials to no share: 22.0-22.3 s with 4
processes (four runs).

`sharing(share)` installs, for a block, the function that gives a study (by name) its current
share; `SharedSlots`, a study's seeded random search, holds no more trials at once than that
share (and than its own `max_concurrent`, where one is given). Outside such a block, or for a
study the function does not know (None), only `max_concurrent` counts, as in Ray Tune.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable

from ray.tune.search.basic_variant import BasicVariantGenerator

_LOCK = threading.Lock()
_SHARE: list[Callable[[str], int | None]] = []


@contextlib.contextmanager
def sharing(share: Callable[[str], int | None]):
    """For this block, a study's trials at once are at most `share(study)` (None: not limited)."""
    with _LOCK:
        _SHARE.append(share)
    try:
        yield
    finally:
        with _LOCK:
            _SHARE.remove(share)


def current_share(study: str) -> int | None:
    with _LOCK:
        share = _SHARE[-1] if _SHARE else None
    return None if share is None else share(study)


class SharedSlots(BasicVariantGenerator):
    """Ray Tune's seeded random search (the same configs in the same order), holding no more trials
    at once than the study's share of the slots (`sharing`) and than `max_concurrent` (0: none).

    The share holds while the study's trials are short, and never grows beyond the most trials the
    study has held at once: one more trial at once is one more trial process to start, which a
    study of short trials would wait for longer than its trials take (growing, Table 10's last
    study, cohorts of about 1 s, started one or two processes that never trained, 2026-12-04).
    Once one of its trials has run `GROWS_AFTER_S` or more, a process's start is small beside its
    trials and the study takes every free slot Ray gives it, as without shares: held to its share,
    Table 7 on the toy set (trials of 5-35 s) ended on one slot, 3 % slower."""

    GROWS_AFTER_S = 5.0  # a trial process's start, 2-4 s on a busy 2-core machine

    def __init__(self, study: str, *, max_concurrent: int = 0, **kwargs):
        self.study = study
        self._held = 0  # the most trials held at once so far
        self._longest_s = 0.0  # the longest finished trial's time
        super().__init__(max_concurrent=max_concurrent, **kwargs)

    @property
    def max_concurrent(self) -> int:
        """What Ray Tune's generator reads before it makes each trial."""
        share = current_share(self.study)
        if share is None or self._longest_s >= self.GROWS_AFTER_S:
            return self._own_limit
        limit = min(share, self._own_limit) if self._own_limit > 0 else max(1, share)
        return min(limit, self._held) if self._held else limit

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        self._own_limit = value

    def next_trial(self):
        trial = super().next_trial()
        if trial is not None:
            self._held = max(self._held, len(self._live_trials))
        return trial

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        took = (result or {}).get("time_total_s")
        if isinstance(took, (int, float)) and math.isfinite(took):
            self._longest_s = max(self._longest_s, float(took))
        super().on_trial_complete(trial_id, result=result, error=error)
