"""Platform overhead: 8 short trials as a seqrep study versus the same 8 trials in a plain loop.

Both sides run in this process, one after the other, on the same machine: the study through Ray
Tune (one trial at a time, so the difference is overhead and not parallelism) with MLflow
tracking and the Parquet summary; the loop through `LocalSession` with the very configs and trial
seeds the study drew, on one torch thread as each study trial has. The Ray cluster and the MLflow store are started before the clock runs (each
start-up is reported separately: it is paid once per cluster or store, not per trial).

Last line: `ratio=<study wall / loop wall> overhead_s_per_trial=<(study - loop) / trials>`.
Goal: overhead <= 1 s per trial.

    python benchmarks/platform_overhead.py [--trials 8] [--max-epochs 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from seqrep import cluster, launch, studies, studydir, summary, tracking
from seqrep.method import TrialContext
from seqrep.session import run_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--space", default="table7-nn-toy")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqrep-bench-"))
    t0 = time.perf_counter()
    with cluster.local(num_cpus=2):
        ray_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracking.prepare_store(f"sqlite:///{work}/m.db")  # a new sqlite store runs MLflow's migrations once
        store_init = time.perf_counter() - t0
        options = studies.StudyOptions(trials=args.trials, max_epochs=args.max_epochs, seed=0,
                                       storage=str(work / "studies"), tracking_uri=f"sqlite:///{work}/m.db",
                                       max_concurrent=1, command="benchmark")
        plan = studies.plan(args.space, "toy", options)
        t0 = time.perf_counter()
        launch.run_study(plan)
        study_wall = time.perf_counter() - t0
    frame = summary.read(plan.directory)

    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    trial_dirs = studydir.trial_dirs(plan.directory)
    if len(trial_dirs) != len(frame):
        raise SystemExit(f"the plain loop found {len(trial_dirs)} trial folders but the study ran {len(frame)} "
                         "trials: the comparison would be meaningless")
    t0 = time.perf_counter()
    for trial_dir in trial_dirs:
        config = json.loads((trial_dir / "params.json").read_text())
        seed = int(frame.set_index("trial_id").loc[trial_dir.name, "trial_seed"])
        context = TrialContext(dataset="toy", max_epochs=args.max_epochs, seed=seed, metric=plan.space.metric,
                               mode=plan.space.mode)
        run_local(plan.space.method, config, context)
    loop_wall = time.perf_counter() - t0

    overhead = (study_wall - loop_wall) / args.trials
    print(f"trials={args.trials} max_epochs={args.max_epochs} statuses={frame['status'].value_counts().to_dict()}")
    print(f"ray_start_s={ray_start:.2f} store_init_s={store_init:.2f} study_wall_s={study_wall:.2f} loop_wall_s={loop_wall:.2f}")
    print(f"ratio={study_wall / loop_wall:.3f} overhead_s_per_trial={overhead:.3f}")


if __name__ == "__main__":
    main()
