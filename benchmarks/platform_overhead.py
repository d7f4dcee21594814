"""Platform overhead: short trials as a seqrep study versus the same trials in a plain loop.

Both sides run in this process, one after the other, on the same machine: the study through Ray
Tune (one Ray trial at a time, so the difference is overhead and not parallelism) with MLflow
tracking and the Parquet summary; the loop through `LocalSession` with the very configs and trial
seeds the study drew, on one torch thread as each study trial has. The Ray cluster and the MLflow
store are started before the clock runs (each start-up is reported separately: it is paid once
per cluster or store, not per trial).

Two cases: `solo`, the space's trials one per Ray trial (`--cohort-size 1`), against `run_local`
per trial; `cohort`, trials of one network shape (table7-nn-toy's rmsprop ranges, 2 x 25 sigmoid
units, batch 10) grouped into cohorts of `--cohort-size` (one Ray trial each), against
`run_local_cohort` per cohort. Each prints
`case=<solo|cohort> ratio=<study wall / loop wall> overhead_s_per_trial=<(study - loop) / trials>`.
Goal: overhead <= 1 s per trial.

    python benchmarks/platform_overhead.py [--trials 8] [--max-epochs 200] [--cohort-size 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from seqrep import cluster, cohorts, launch, spaces, studies, studydir, summary, tracking
from seqrep.method import TrialContext
from seqrep.session import run_local, run_local_cohort

ONE_SHAPE = """name: nn-one-shape
method: mlp
source: "benchmark: table7-nn-toy with one network shape"
datasets: [toy]
metric: valid_nll
mode: min
max_epochs: 200
fixed: {hidden_layers: 2, hidden_units: 25, transfer: sigmoid, batch_size: 10}
space:
  step_rate: {loguniform: [1.0e-4, 0.1]}
  decay: {uniform: [0.1, 0.99]}
  momentum: {uniform: [0.0, 0.99]}
"""


def study(work: Path, space: spaces.SearchSpace, args, name: str, cohort_size: int):
    options = studies.StudyOptions(trials=args.trials, max_epochs=args.max_epochs, seed=0, name=name,
                                   storage=str(work / "studies"), tracking_uri=f"sqlite:///{work}/m.db",
                                   max_concurrent=1, command="benchmark", cohort_size=cohort_size)
    plan = studies.plan(space.name, "toy", options, space=space)
    t0 = time.perf_counter()
    launch.run_study(plan)
    return plan, time.perf_counter() - t0


def loop(plan: studies.StudyPlan, frame, max_epochs: int) -> float:
    """The study's trials again, through the local session, one after the other (one cohort at a time)."""
    seeds = dict(zip(frame["trial_id"], frame["trial_seed"]))
    context = lambda seed: TrialContext(dataset="toy", max_epochs=max_epochs, seed=int(seed),  # noqa: E731
                                        metric=plan.space.metric, mode=plan.space.mode)
    grouped = cohorts.read(plan.directory)
    trial_dirs = studydir.trial_dirs(plan.directory)
    members = sum(len(grouped[json.loads((d / "params.json").read_text())["cohort"]]) for d in trial_dirs) \
        if grouped is not None else len(trial_dirs)
    if members != len(frame):
        raise SystemExit(f"the plain loop found {members} trials in the trial folders but the study ran {len(frame)}: "
                         "the comparison would be meaningless")
    t0 = time.perf_counter()
    for trial_dir in trial_dirs:
        config = json.loads((trial_dir / "params.json").read_text())
        if grouped is None:
            run_local(plan.space.method, config, context(seeds[trial_dir.name]))
            continue
        configs = grouped[config["cohort"]]
        contexts = [context(seeds[cohorts.member_id(trial_dir.name, k)]) for k in range(len(configs))]
        run_local_cohort(plan.space.method, configs, contexts)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--space", default="table7-nn-toy")
    parser.add_argument("--cohort-size", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqrep-bench-"))
    (work / "nn-one-shape.yaml").write_text(ONE_SHAPE)
    cases = {"solo": (spaces.load(args.space), 1), "cohort": (spaces.load(work / "nn-one-shape.yaml"), args.cohort_size)}
    t0 = time.perf_counter()
    with cluster.local(num_cpus=2):
        ray_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracking.prepare_store(f"sqlite:///{work}/m.db")  # a new sqlite store runs MLflow's migrations once
        print(f"ray_start_s={ray_start:.2f} store_init_s={time.perf_counter() - t0:.2f}")
        ran = {case: study(work, space, args, case, size) for case, (space, size) in cases.items()}
    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    for case, (plan, study_wall) in ran.items():
        frame = summary.read(plan.directory)
        loop_wall = loop(plan, frame, args.max_epochs)
        overhead = (study_wall - loop_wall) / args.trials
        print(f"case={case} trials={args.trials} max_epochs={args.max_epochs} ray_trials="
              f"{len(studydir.trial_dirs(plan.directory))} statuses={frame['status'].value_counts().to_dict()} "
              f"study_wall_s={study_wall:.2f} loop_wall_s={loop_wall:.2f}")
        print(f"case={case} ratio={study_wall / loop_wall:.3f} overhead_s_per_trial={overhead:.3f}")


if __name__ == "__main__":
    main()
