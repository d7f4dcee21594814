"""The platform side of cohorts (`seqrep.cohorts`, `seqrep.results.decode_cohort`): the driver draws
exactly the configs Ray Tune's seeded random search draws, groups them by the method's cohort keys,
and a cohort's trial folder decodes into one outcome (one Parquet row) per member."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from seqrep import cohorts, results, searchers, spaces, studydir, summary
from seqrep.method import Declaration


def ray_configs(param_space: dict, seed: int, samples: int) -> list[dict]:
    """What Ray Tune's own seeded BasicVariantGenerator hands out, trial by trial."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    def trainable(config):  # never run: the generator only needs something to name
        return None

    generator = BasicVariantGenerator(random_state=seed)
    generator.add_configurations({"x": {"run": trainable, "config": param_space, "num_samples": samples}})
    out = []
    while (trial := generator.next_trial()) is not None:
        out.append(trial.config)
    return out


@pytest.mark.parametrize("name, samples, seed", [("table7-nn-toy", 8, 0), ("table7-ivn-toy", 13, 5),
                                                 ("table8-fawn-vb", 2, 3), ("table10-osp", 32, 1)])
def test_the_driver_draws_the_configs_of_rays_seeded_random_search(name, samples, seed):
    param_space = searchers.to_tune(spaces.load(name))
    drawn = searchers.draw(param_space, seed, samples)
    assert drawn == ray_configs(param_space, seed, samples)
    grids = math.prod(len(d.args) for d in spaces.load(name).space.values() if d.kind == "grid")
    assert len(drawn) == samples * grids


def test_configs_are_grouped_by_their_shared_keys_in_near_equal_cohorts():
    configs = [{"units": u, "rate": r} for r, u in enumerate([10, 20, 10, 10, 20, 10, 10, 30])]
    assert cohorts.group(configs, ["units"], 16) == [[0, 2, 3, 5, 6], [1, 4], [7]]
    # five members of one shape, at most two per cohort: ceil(5 / 2) = 3 cohorts of 1-2 members
    assert cohorts.group(configs, ["units"], 2) == [[0], [1, 4], [2, 3], [5, 6], [7]]
    assert cohorts.group(configs, [], 3) == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert cohorts.group(configs, ["units", "rate"], 16) == [[i] for i in range(8)]
    with pytest.raises(ValueError, match="a cohort holds at least one member, got size=0"):
        cohorts.group(configs, ["units"], 0)


def test_cohorts_are_split_while_the_cluster_would_leave_slots_idle():
    sixteen = [list(range(16))]
    assert cohorts.spread(sixteen, 1) == sixteen
    assert cohorts.spread(sixteen, 2) == [list(range(8)), list(range(8, 16))]
    assert [len(c) for c in cohorts.spread(sixteen, 4)] == [4, 4, 4, 4]
    # halves keep two members: seven cohorts wanted, but a cohort of three is not split
    assert [len(c) for c in cohorts.spread([[0, 1, 2, 3, 4, 5], [6]], 7)] == [3, 3, 1]
    assert cohorts.spread([[0, 2], [1, 3]], 8) == [[0, 2], [1, 3]]


def test_the_study_log_line_says_how_configs_were_grouped():
    line = cohorts.describe([[1, 2, 3], [4], [5, 6]], ["hidden_units", "batch_size"])
    assert line == "6 configs in 3 cohort(s) of sizes 3, 2, 1 (members share hidden_units, batch_size)"


def _cohort_trial(tmp_path: Path, members: list[dict], reports: list[dict], error: str | None = None,
                  draws: list[list[int]] | None = None) -> Path:
    """A study folder with one cohort trial whose result.json holds `reports`."""
    study = tmp_path / "study"
    trial = study / studydir.RAY_DIR / "abc_00000"
    trial.mkdir(parents=True)
    (trial / results.PARAMS_FILE).write_text(json.dumps({"cohort": 0}))
    (trial / results.RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in reports))
    if error is not None:
        (trial / results.ERROR_FILE).write_text(error)
    cohorts.write(study, [members], ["units"], 16, draws)
    studydir.write_record(study, {"name": "s", "space": "sp", "method": "m", "dataset": "toy", "seed": 0,
                                  "metric": "valid_nll", "mode": "min", "cpus_per_trial": 1, "gpus_per_trial": 0})
    return study


def _entry(k: int, epochs: range, **final) -> dict:
    return {"member": k, "history": [{"epoch": e, "train_loss": 1.0 / e, "valid_nll": 10.0 - e - k} for e in epochs],
            **final}


MEMBERS = [{"units": 10, "rate": 0.1}, {"units": 10, "rate": 0.2}, {"units": 10, "rate": 0.3}]


def test_a_cohort_folder_decodes_into_one_outcome_per_member(tmp_path):
    done = {"seqrep_status": "completed", "best_epoch": 3, "valid_nll": 7.0, "test_nll": 7.5}
    reports = [
        {"epoch": 2, "valid_nll": 8.0, results.MEMBERS_KEY: [_entry(0, range(1, 3)), _entry(1, range(1, 3)),
                                                             _entry(2, range(1, 2), seqrep_status="diverged",
                                                                    best_epoch=0, valid_nll=math.nan)]},
        {"epoch": 3, "valid_nll": 6.0, "time_total_s": 12.5, "node_ip": "10.0.0.1",
         results.MEMBERS_KEY: [_entry(0, range(3, 4), **done), _entry(1, range(3, 4), **{**done, "test_nll": 6.5})]},
    ]
    study = _cohort_trial(tmp_path, MEMBERS, reports)
    outcomes = results.decode_study(study, studydir.read_record(study), Declaration())
    assert [o.trial_id for o in outcomes] == ["abc_00000-m0", "abc_00000-m1", "abc_00000-m2"]
    assert [o.status for o in outcomes] == ["completed", "completed", "diverged"]
    assert [o.config for o in outcomes] == MEMBERS
    assert [o.epochs for o in outcomes] == [3, 3, 1]
    assert outcomes[1].metrics == {"valid_nll": 7.0, "test_nll": 6.5}
    assert math.isnan(outcomes[2].metrics["valid_nll"]) and outcomes[2].best_epoch is None
    assert {o.wall_s for o in outcomes} == {12.5} and {o.cohort for o in outcomes} == {"abc_00000"}
    frame = summary.collect(study)
    assert len(frame) == 3
    assert list(frame["cohort"]) == ["abc_00000"] * 3
    assert list(frame["trial_seed"]) == [results.trial_seed(0, m) for m in MEMBERS]
    assert frame["draw"].isna().all()  # a cohorts.json written before seqrep kept the draws
    drawn = _cohort_trial(tmp_path / "drawn", MEMBERS, reports, draws=[[4, 0, 2]])
    assert summary.collect(drawn)["draw"].tolist() == [4, 0, 2]  # each member's place in the search's draws


def test_members_a_failed_cohort_left_unfinished_are_errored_with_its_error(tmp_path):
    reports = [{"epoch": 1, "valid_nll": 8.0, results.MEMBERS_KEY: [
        _entry(0, range(1, 2), seqrep_status="completed", best_epoch=1, valid_nll=9.0, test_nll=9.5),
        _entry(1, range(1, 2)), _entry(2, range(1, 2))]}]
    study = _cohort_trial(tmp_path, MEMBERS, reports, error="Traceback\n  File x\nRuntimeError: out of memory\n")
    outcomes = results.decode_study(study, studydir.read_record(study), Declaration())
    assert [o.status for o in outcomes] == ["completed", "errored", "errored"]
    assert [o.error for o in outcomes] == [None, "RuntimeError: out of memory", "RuntimeError: out of memory"]
    # an unfinished member's best so far: epoch 1 of its history
    assert outcomes[1].best_epoch == 1 and outcomes[1].metrics == {"valid_nll": 8.0}


def test_a_config_alone_is_a_cohort_of_one_only_where_the_method_says_its_cohort_trainer_is_faster(tmp_path, monkeypatch):
    """`COHORT_OF_ONE`: Table 7's FAWN-VB (one fixed config) trains as a cohort of one; NN's single
    trial, whose method does not declare it, runs alone as without cohorts."""
    from seqrep import cluster, launch, studies
    from trainables import fawn_vb, mlp

    monkeypatch.setattr(cluster, "slots", lambda cpus, gpus, max_concurrent: 2)
    assert fawn_vb.COHORT_OF_ONE is True and not hasattr(mlp, "COHORT_OF_ONE")
    options = studies.StudyOptions(storage=str(tmp_path / "s"), seed=0, trials=1)
    fawn = studies.plan("table7-fawn-vb-toy", "toy", options)
    fawn.directory.mkdir(parents=True)  # (`launch.run_study` opens the study folder first)
    grouped = launch._cohorts(fawn, None)
    assert grouped == [[searchers.draw(searchers.to_tune(fawn.space), 0, 1)[0]]]
    assert grouped[0][0]["hidden_units"] == 100 and grouped[0][0]["batch_size"] == 50
    assert cohorts.read(fawn.directory) == grouped and cohorts.read_draws(fawn.directory) == [[0]]
    nn = studies.plan("table7-nn-toy", "toy", options)
    nn.directory.mkdir(parents=True)
    assert launch._cohorts(nn, None) is None and cohorts.read(nn.directory) is None


def test_storn_trains_cohorts_only_where_its_trials_get_a_gpu(tmp_path, monkeypatch):
    """`COHORT_DEVICES`: a STORN cohort on one CPU thread is slower than its members one after another
    (README, "Cohorts"), so a study of CPU trials trains one config per trial; with a GPU share per
    trial its configs are grouped by their shape (here: by latent_units, the only shape key drawn)."""
    import os

    from seqrep import cluster, launch, studies
    from trainables import mlp, storn

    assert storn.COHORT_DEVICES == ("cuda",) and launch.cohorts_pay(mlp, 0.0) and launch.cohorts_pay(mlp, 0.5)
    assert not launch.cohorts_pay(storn, 0.0) and launch.cohorts_pay(storn, 0.25)
    if not os.environ.get("SEQREP_DATA"):
        pytest.skip("SEQREP_DATA is not set: planning a table13-storn study needs JSB Chorales")
    monkeypatch.setattr(cluster, "slots", lambda cpus, gpus, max_concurrent: 1)
    for gpus in (0.0, 0.25):
        options = studies.StudyOptions(storage=str(tmp_path / f"s{gpus}"), seed=0, trials=12, gpus_per_trial=gpus,
                                       data_dir=os.environ["SEQREP_DATA"])
        plan = studies.plan("table13-storn", "jsb", options)
        plan.directory.mkdir(parents=True)
        grouped = launch._cohorts(plan, None)
        if gpus == 0.0:
            assert grouped is None and cohorts.read(plan.directory) is None
            continue
        latents = [c["latent_units"] for c in searchers.draw(searchers.to_tune(plan.space), 0, 12)]
        assert sorted(len(members) for members in grouped) == sorted(latents.count(v) for v in set(latents))
        assert all(len({c["latent_units"] for c in members}) == 1 for members in grouped)
        drawn, draws = searchers.draw(searchers.to_tune(plan.space), 0, 12), cohorts.read_draws(plan.directory)
        assert sorted(i for members in draws for i in members) == list(range(12))  # every draw once, by its place
        assert [[drawn[i] for i in members] for members in draws] == grouped
