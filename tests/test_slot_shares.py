"""`seqrep.slot_shares`: a study's random search holds no more trials at once than its share of
the slots, and draws the very configs Ray Tune's own generator draws."""

from __future__ import annotations

import pickle

from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search.basic_variant import BasicVariantGenerator

from seqrep import slot_shares
from seqrep.slot_shares import SharedSlots


def _objective(config):
    return {"x": config["x"]}


def _generator(cls, **kwargs):
    generator = cls(random_state=7, **kwargs)
    space = {"x": tune.uniform(0, 1), "k": tune.grid_search([0, 1, 2])}
    generator.add_configurations([Experiment("e", _objective, config=space, num_samples=2)])
    return generator


def _drain(generator) -> list:
    """Every trial, each completed as soon as it is made."""
    trials = []
    while (trial := generator.next_trial()) is not None:
        trials.append(trial)
        generator.on_trial_complete(trial.trial_id)
    return trials


def test_a_study_of_short_trials_holds_its_share_and_one_of_long_trials_takes_every_slot():
    share = {"s": 1}
    generator = _generator(SharedSlots, study="s")
    with slot_shares.sharing(share.get):
        first = generator.next_trial()
        assert first is not None and generator.next_trial() is None  # one live trial: its share
        share["s"] = 3  # two other studies ended
        assert generator.next_trial() is None  # no new trial process for a grown share
        generator.on_trial_complete(first.trial_id, {"time_total_s": 4.9})  # short: still one at once
        second = generator.next_trial()
        assert second is not None and generator.next_trial() is None
        share["s"] = 1
        generator.on_trial_complete(second.trial_id, {"time_total_s": SharedSlots.GROWS_AFTER_S})
        assert generator.max_concurrent == 0  # long trials: no share, only its own limit (none)
        rest = [generator.next_trial() for _ in range(5)]  # the last four of six, at once
        assert None not in rest[:4] and rest[4] is None


def test_its_own_limit_caps_the_share_and_a_study_the_share_does_not_know_keeps_its_own():
    with slot_shares.sharing(lambda study: {"s": 4}.get(study)):
        assert SharedSlots("s", max_concurrent=2).max_concurrent == 2
        assert SharedSlots("s", max_concurrent=0).max_concurrent == 4
        assert SharedSlots("other", max_concurrent=3).max_concurrent == 3
        assert SharedSlots("other").max_concurrent == 0
    with slot_shares.sharing(lambda study: 0):
        assert SharedSlots("s").max_concurrent == 1  # never none at all
    assert SharedSlots("s", max_concurrent=2).max_concurrent == 2  # outside a block: its own limit


def test_the_same_configs_in_the_same_order_as_ray_tunes_generator_and_a_resumable_pickle():
    ours, theirs = _drain(_generator(SharedSlots, study="s")), _drain(_generator(BasicVariantGenerator))
    assert len(ours) == 6
    assert [t.config for t in ours] == [t.config for t in theirs]
    restored = pickle.loads(pickle.dumps(SharedSlots("s", max_concurrent=2)))  # as in tuner.pkl
    assert (restored.study, restored.max_concurrent) == ("s", 2)
    state = SharedSlots("s", max_concurrent=2).get_state()
    fresh = SharedSlots("t")
    fresh.set_state(state)  # Ray Tune's searcher checkpoint
    assert (fresh.study, fresh.max_concurrent) == ("s", 2)
