"""A cohort's Ray channel (`seqrep.cohort_session.CohortChannel`) writes checkpoints whose member
states all belong to one epoch, reading the members' deferred checkpoints
(`trainables.kit.cohort.Deferred`) only while they are current, also when a member diverges."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

import seqrep.data
from seqrep.cohort_session import FINISHED_FILE, CohortChannel, MemberSession
from seqrep.method import TrialContext
from seqrep.session import run_local_cohort
from trainables import mlp
from trainables.kit.cohort import Deferred


class FakeTune:
    """What the channel uses of `ray.tune`: every report with what its checkpoint folder held."""

    class Checkpoint:
        @staticmethod
        def from_directory(path: str) -> str:
            return path

    def __init__(self):
        self.sent: list[tuple[dict, dict[str, int | None]]] = []

    def report(self, result, checkpoint=None):
        folder = Path(checkpoint)
        states = {}  # member folder -> the epoch of its state (None: its model, no state)
        for member in sorted(p for p in folder.iterdir() if p.is_dir()):
            state = member / "state.pt"
            states[member.name] = int(torch.load(state)["epoch"]) if state.exists() else None
        assert (folder / FINISHED_FILE).exists()
        self.sent.append((result, states))

    def get_checkpoint(self):
        return None


def channel(size: int) -> tuple[CohortChannel, FakeTune]:
    c = CohortChannel([{"k": k} for k in range(size)], "valid_nll", "min", report_interval_s=0.0)
    c._tune = fake = FakeTune()
    return c, fake


def test_a_deferred_checkpoint_is_built_once_when_read_and_not_after_it_expired():
    built = []
    late = Deferred(lambda: built.append(1) or {"epoch": 3})
    assert built == []
    read = Deferred(lambda: built.append(2) or {"epoch": 4, "model": torch.zeros(2)})
    assert dict(read)["epoch"] == 4 and len(read) == 2 and built == [2]
    read.expire()
    late.expire()
    assert read["epoch"] == 4 and built == [2]  # read in time: kept
    loaded = pickle.loads(pickle.dumps(read))  # pickled as the dict it stands for
    assert type(loaded) is dict and loaded["epoch"] == 4 and torch.equal(loaded["model"], torch.zeros(2))
    with pytest.raises(RuntimeError, match="^a cohort member's checkpoint was read after its epoch ended; a session "
                                           "must read \\(persist or copy\\) a checkpoint before the next training "
                                           "step$"):
        dict(late)
    assert built == [2]


def test_a_diverging_member_s_older_state_never_joins_the_others_newer_ones(tmp_path):
    c, fake = channel(2)
    c.report(0, {"epoch": 1, "valid_nll": 1.0}, {"epoch": 1})
    c.report(1, {"epoch": 1, "valid_nll": 2.0}, {"epoch": 1})
    assert [states for _, states in fake.sent] == [{"m0": 1, "m1": 1}]
    c.report(0, {"epoch": 2, "valid_nll": 0.5}, {"epoch": 2})
    c.report(1, {"epoch": 2, "valid_nll": math.nan}, None)  # member 1 diverges: no state, its finish follows
    assert len(fake.sent) == 1  # before the fix: a checkpoint with m0 at epoch 2 and m1 at epoch 1
    c.finish(1, {"best_epoch": 1}, {"model": {}}, "diverged", tmp_path)
    assert [states for _, states in fake.sent] == [{"m0": 1, "m1": 1}, {"m0": 2, "m1": None}]
    result = fake.sent[-1][0]
    assert result["epoch"] == 2 and [e["member"] for e in result["members"]] == [0, 1]
    assert result["members"][1]["seqrep_status"] == "diverged"


def test_a_cohort_through_the_channel_checkpoints_one_epoch_at_a_time_and_trains_as_locally():
    """NN with a member that diverges at epoch 4, every boundary sent (interval 0): each checkpoint
    holds the open members' states of the result's epoch, and the members train as with local
    sessions (which read every checkpoint at once)."""
    data = seqrep.data.load("toy")
    shape = dict(hidden_layers=2, hidden_units=25, batch_size=10)
    configs = [dict(shape, transfer="sigmoid", step_rate=1e-3, decay=0.9, momentum=0.9),
               dict(shape, transfer="rectifier", step_rate=1e5, decay=0.9, momentum=0.9),
               dict(shape, transfer="sigmoid", step_rate=1e-2, decay=0.99, momentum=0.5)]
    seeds = [1, 2, 3]
    contexts = [TrialContext(dataset="toy", data=data, max_epochs=8, seed=s, metric="valid_nll", mode="min")
                for s in seeds]
    c, fake = channel(3)
    sessions = [MemberSession(c, k, context, None) for k, context in enumerate(contexts)]
    try:
        mlp.train_cohort([mlp.Config.from_dict(dict(config)) for config in configs], sessions)
    finally:
        c.close()
    local = run_local_cohort("mlp", configs, contexts)
    assert [s.status for s in local] == ["completed", "diverged", "completed"]
    assert [c.finals[k]["seqrep_status"] for k in range(3)] == ["completed", "diverged", "completed"]
    for result, states in fake.sent:
        assert {epoch for epoch in states.values() if epoch is not None} <= {result["epoch"]}
    assert [states for _, states in fake.sent][3:5] == [{"m0": 4, "m1": None, "m2": 4}, {"m0": 5, "m1": None, "m2": 5}]
    histories = {k: [] for k in range(3)}
    for result, _ in fake.sent:
        for entry in result["members"]:
            histories[entry["member"]].extend(entry["history"])
    for k, session in enumerate(local):
        assert [h["epoch"] for h in histories[k]] == [h["epoch"] for h in session.history]
        assert [h["valid_nll"] for h in histories[k]] == pytest.approx([h["valid_nll"] for h in session.history],
                                                                      rel=0, abs=0, nan_ok=True)
        if session.status == "completed":
            assert c.finals[k]["test_nll"] == session.final["test_nll"]
