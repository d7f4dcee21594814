"""The session contract methods train through, without Ray."""

from __future__ import annotations

import pytest
import torch

from seqrep.method import TrialContext
from seqrep.results import trial_seed
from seqrep.session import LocalSession

CTX = TrialContext(dataset="toy", max_epochs=2, seed=1, metric="valid_nll", mode="min")


def test_trial_seed_is_stable_and_depends_on_study_seed_and_config():
    config = {"step_rate": 0.01, "hidden_units": 50}
    assert trial_seed(7, config) == trial_seed(7, dict(reversed(list(config.items()))))
    assert trial_seed(7, config) != trial_seed(8, config)
    assert trial_seed(7, config) != trial_seed(7, {**config, "hidden_units": 51})
    assert 0 <= trial_seed(7, config) < 2**31


def test_a_reported_checkpoint_is_a_snapshot_not_a_reference():
    session = LocalSession(CTX)
    weights = torch.zeros(3)
    for epoch in (1, 2):
        session.report({"epoch": epoch, "valid_nll": 1.0}, checkpoint={"w": weights, "epoch": epoch})
        weights += 1.0  # the optimiser updates in place after the report
    assert session.checkpoint["w"].tolist() == [1.0, 1.0, 1.0] and session.checkpoint["epoch"] == 2


class Opaque:  # an arbitrary object needs unpickling code: refused, as it is under Ray
    pass


def test_the_first_checkpoint_must_load_with_weights_only():
    session = LocalSession(CTX)
    with pytest.raises(Exception, match="Weights only load failed"):
        session.report({"epoch": 1}, checkpoint={"thing": Opaque()})


def test_contract_errors():
    session = LocalSession(CTX)
    with pytest.raises(ValueError, match="a report must hold the epoch it belongs to"):
        session.report({"valid_nll": 1.0})
    with pytest.raises(ValueError, match=r"status must be one of \('completed', 'diverged'\), got 'done'"):
        session.finish({}, None, "done")


@pytest.mark.parametrize("mode, values, best", [("min", [3.0, 1.0, 2.0], 1.0), ("max", [3.0, 1.0, 4.0], 4.0)])
def test_better_follows_the_mode(mode, values, best):
    ctx = TrialContext(dataset="toy", max_epochs=1, seed=0, metric="valid_x", mode=mode)
    current = None
    for v in values:
        if ctx.better(v, current):
            current = v
    assert current == best
