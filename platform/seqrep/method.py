"""The whole of the engine a method sees: `Session`, `TrialContext`, `MethodConfig`, `SeqrepError`.

A method module (`trainables/<name>.py`) imports only this module from `seqrep`. It defines a
typed `Config` (a `MethodConfig` dataclass), `train(config, session)`, and optionally `DECLARES`, a
`Declaration` of what the platform must know about its results. Everything a trial needs besides
its hyperparameters arrives in `session.context`, the data set object included: the engine loads
(or receives through Ray's object store) the data once and hands it over; a method never opens
files or reads globals. This module imports neither Ray, nor MLflow, nor torch.

Cohorts (optional). A method may also train several trials of one random search at once, as one
vectorised model. It then defines `COHORT_KEYS`, the config keys whose values fix every tensor
shape (members of a cohort agree on all of them), and `train_cohort(configs, sessions)`: one
`Config` and one `Session` per member. A method whose trainer pads members of different shapes
to one may also define `cohort_group(config)`, the value by which the engine groups configs (in
place of their `COHORT_KEYS` values), and `COHORT_PADDED`, the keys its members may then differ
in (named in the study log), and `COHORT_OF_ONE = True` where its `train_cohort` trains even one
config faster than its `train` does: a study whose configs share no shape then still trains them
through it, each a cohort of one; and `COHORT_DEVICES`, where its cohorts pay only on some devices
("cpu", "cuda"; default both): a study whose trials get another device trains one config per trial.
Each member session is a whole `Session`: its context holds
the member's own seed (and shares data set, epoch budget, selection and device with the others),
and the trainer calls its `report` every epoch and its `finish` once, with exactly the metrics the
member's solo `train` would report, so a member is one Parquet row and one MLflow run like any
trial. A member that diverges is finished `diverged` (its parameters frozen) while the others go
on. On a restart every member's `restore()` returns that member's latest checkpoint; the engine
persists the members' checkpoints together, only after every unfinished member has reported the
same epoch, so the trainer resumes all of them from one epoch (members that had finished before
the restart keep their result and are not handed to the trainer again).
"""


from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping

from seqrep.data.base import ClassificationData, RegressionData, SequenceData, UCISplits
from seqrep.errors import SeqrepError

__all__ = ["ClassificationData", "Declaration", "MethodConfig", "RegressionData", "SeqrepError", "SequenceData",
           "Session", "TrialContext", "UCISplits", "coerce", "is_finite"]

STATUSES = ("completed", "diverged")  # what a method may finish with; errored / stopped are the engine's


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What a trial needs to know besides its hyperparameters (frozen: a method cannot change it)."""

    dataset: str  # the data set's registry name
    max_epochs: int
    seed: int  # this trial's own seed, derived from the study seed and the trial's config
    metric: str  # selection metric, e.g. "valid_nll"
    mode: str  # "min" or "max"
    device: str = "cpu"
    # the loaded data set: RegressionData, UCISplits, SequenceData or ClassificationData (the
    # engine always sets it before a method runs; `seqrep.session.run_local` loads it when None)
    data: Any = dataclasses.field(default=None, repr=False, compare=False)

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def describe(self) -> dict[str, Any]:
        """The context without the data, as JSON-friendly values (written beside checkpoints)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "data"}


class Session(ABC):
    """What a method calls: read `context`, `report` every epoch, `finish` once.

    `report(metrics, checkpoint)`: one epoch's metrics (must hold `epoch`) and the state to resume
    from. `finish(metrics, model, status)`: the final metrics (test metrics at the best-validation
    state), the model to keep and a status from `STATUSES`. `restore()`: the latest persisted
    checkpoint on a restart, else None. `artifact_dir`: a folder for files (plots) that end up with
    the trial's run.
    """

    context: TrialContext

    @abstractmethod
    def report(self, metrics: Mapping[str, float], checkpoint: Mapping[str, Any] | None = None) -> None:
        """The session may persist `checkpoint` now or at a later report; it must hold only what
        `torch.load(weights_only=True)` accepts (tensors, numbers, strings, lists, dicts)."""

    @abstractmethod
    def finish(self, metrics: Mapping[str, float], model: Mapping[str, Any] | None, status: str) -> None:
        """The trial's last call: final metrics, the model to keep (best checkpoint), its status."""

    @abstractmethod
    def restore(self) -> dict[str, Any] | None:
        """The latest persisted checkpoint of this trial, or None on a fresh start."""

    @property
    @abstractmethod
    def artifact_dir(self) -> Path:
        """A directory for files (plots) that should end up with the trial's run."""


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What the platform must know about a method's results, declared by the method (`DECLARES`).

    `row_requires`: final metrics that must be non-zero for a trial to stand for its study in a
    rebuilt table (Section 3.5.2 keeps only trials whose classification improved in training:
    `("valid_improved",)`). `train_metrics`: training-set metrics the method measures at the
    best-validation state and reports with its final metrics (Table 9's `train_nca_prob`); they
    become Parquet columns beside `valid_*` and `test_*`.
    """

    row_requires: tuple[str, ...] = ()
    train_metrics: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {"row_requires": list(self.row_requires), "train_metrics": list(self.train_metrics)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> "Declaration":
        value = value or {}
        return cls(tuple(value.get("row_requires") or ()), tuple(value.get("train_metrics") or ()))


def is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base class of every method's `Config`. Subclasses declare typed fields with defaults.

    A typo in a key must never silently train every trial with a default (STYLE.md, habit 4), so
    `from_dict` rejects unknown keys and names the allowed ones.
    """

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> "MethodConfig":
        allowed = cls.field_names()
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise SeqrepError(
                f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__module__}.{cls.__qualname__}; "
                f"allowed: {', '.join(allowed)}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: coerce(v, hints[k], f"{where}: {k}") for k, v in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, rules: "list[tuple[str, str, bool]]") -> None:
        """Raise for the first (field, rule, holds) whose rule does not hold, naming rule and value."""
        for field, rule, holds in rules:
            if not holds:
                raise SeqrepError(f"{type(self).__module__}.Config: {rule} must hold, "
                                  f"but got {field}={getattr(self, field)!r}")


def _coerce_union(value: Any, options: tuple, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(value, option, where)
        except SeqrepError as err:
            errors.append(str(err))
    raise SeqrepError(errors[0] if errors else f"{where}: got {value!r}")


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's annotation; integral floats become ints (Ray's quniform)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), where)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise SeqrepError(f"{where}: got {value!r}, allowed: {', '.join(map(repr, allowed))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SeqrepError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SeqrepError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SeqrepError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SeqrepError(f"{where}: expected a string, got {value!r}")
    return value
