"""Section 3.5.2's rule: keep "only those trials where the classification performance improved during
optimisation".

`ImprovementSession` wraps a trial's session: the untrained network's validation error (measured
before the first epoch) travels in every checkpoint, and the final result gets
`valid_initial_error` and `valid_improved` (1.0 when the best validation error is below it, else
0.0; untrained methods are exempt and get 1.0), plus any `extra` final metrics (`train_nca_prob`).
The reduction methods declare `valid_improved` as a `row_requires` metric, so rebuilt tables skip
trials with 0.
"""

from __future__ import annotations

import math

from seqrep.method import Session


class ImprovementSession(Session):
    """Wraps the trial's session: keeps the untrained network's validation error in the checkpoint
    and adds `valid_initial_error`, `valid_improved` and `extra` metrics to the final result."""

    def __init__(self, session: Session, exempt: bool = False):
        self._inner = session
        self.context = session.context
        self.initial: float | None = None
        self.exempt = exempt
        self.extra: dict[str, float] = {}

    def report(self, metrics, checkpoint=None):
        if checkpoint is not None:
            checkpoint = {**checkpoint, "initial_valid_error": self.initial}
        self._inner.report(metrics, checkpoint)

    def finish(self, metrics, model, status):
        metrics = dict(metrics)
        metrics.update(self.extra)
        if self.initial is not None:
            metrics["valid_initial_error"] = self.initial
            best = metrics.get("valid_error")
            improved = self.exempt or (best is not None and math.isfinite(best) and best < self.initial)
            metrics["valid_improved"] = 1.0 if improved else 0.0
        self._inner.finish(metrics, model, status)

    def restore(self):
        state = self._inner.restore()
        if state is not None and state.get("initial_valid_error") is not None:
            self.initial = float(state["initial_valid_error"])
        return state

    @property
    def artifact_dir(self):
        return self._inner.artifact_dir
