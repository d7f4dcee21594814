"""A search space in Ray Tune's and Optuna's terms, and the searcher and scheduler of a study.

`to_tune` (here) and `seqrep.spaces.to_optuna` are the one place each where a `SearchSpace` becomes either library's
distributions; `randint` includes its upper bound in the YAML, so Ray's `tune.randint` (exclusive)
gets `high + 1` and Optuna's `IntDistribution` (inclusive) the bounds as they are.
"""

from __future__ import annotations

from typing import Any

from seqrep.spaces import SearchSpace, to_optuna


def to_tune(space: SearchSpace) -> dict[str, Any]:
    """Ray Tune `param_space`: fixed values as constants, one `ray.tune` domain per searched key."""
    from ray import tune

    out: dict[str, Any] = dict(space.fixed)
    for key, dist in space.space.items():
        if dist.kind == "choice":
            out[key] = tune.choice(list(dist.args))
        elif dist.kind == "grid":
            out[key] = tune.grid_search(list(dist.args))
        elif dist.kind == "uniform":
            out[key] = tune.uniform(dist.low, dist.high)
        elif dist.kind == "loguniform":
            out[key] = tune.loguniform(dist.low, dist.high)
        elif dist.kind == "randint":
            out[key] = tune.randint(dist.low, dist.high + 1)  # Ray excludes the upper bound
        elif dist.kind == "quniform":
            out[key] = tune.quniform(dist.low, dist.high, dist.args[2])
        else:  # parse_distribution admits only KINDS
            raise AssertionError(dist.kind)
    return out


def draw(param_space: Mapping[str, Any], seed: int, samples: int) -> list[dict[str, Any]]:
    """The configs a seeded `BasicVariantGenerator` gives `samples` samples of `param_space`
    (every grid expanded in each sample, as Ray Tune does), in Ray's order."""
    from ray.tune.search.sample import _BackwardsCompatibleNumpyRng
    from ray.tune.search.variant_generator import generate_variants

    rng = _BackwardsCompatibleNumpyRng(seed)
    configs = []
    for _ in range(samples):
        for _, spec in generate_variants({"config": dict(param_space)}, constant_grid_search=False, random_state=rng):
            configs.append(dict(spec["config"]))
    return configs


def search(space: SearchSpace, searcher: str, seed: int, max_concurrent: int | None,
           study: str = "") -> tuple[dict[str, Any], Any]:
    """The Tuner's `param_space` and search algorithm: a seeded random search (holding at most the
    study's share of the slots while `seqrep.slot_shares.sharing` says one), or Optuna's TPE."""
    if searcher == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        return dict(space.fixed), OptunaSearch(space=to_optuna(space), metric=space.metric, mode=space.mode,
                                               sampler=TPESampler(seed=seed))
    from seqrep.slot_shares import SharedSlots

    # Ray ignores TuneConfig.max_concurrent_trials for a BasicVariantGenerator: give it here
    return to_tune(space), SharedSlots(study, random_state=seed, max_concurrent=max_concurrent or 0)


def scheduler(name: str, max_epochs: int):
    """FIFO (every trial runs its budget) or ASHA on `epoch` (poor trials stop early)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=max(1, max_epochs // 16))
    return FIFOScheduler()
