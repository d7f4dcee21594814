"""Cohorts: K same-shape trials trained as one vectorised model against the same K run one by one.

Case `mlp`: K = 16 NN trials on `toy` with table7-nn-toy's rmsprop space (step rate log-uniform
in [1e-4, 0.1], decay uniform in [0.1, 0.99], momentum uniform in [0, 0.99]) and the shape fixed
at 2 x 25 sigmoid units, minibatches of 10, 200 epochs, each trial with its own seed.

- sequential: the 16 trials through `seqrep.session.run_local("mlp", ...)`, one after another
  (each with its per-epoch checkpoint snapshot);
- cohort: one `trainables.kit.cohort.run_mlp_cohort` over the same configs and seeds (no
  checkpoints: cohorts do not checkpoint yet).

Neither side draws the per-trial predictive plot (Figure 6) unless `--plots` is given: it costs
~0.13 s of Matplotlib per trial on either side, as much as a third of a solo trial's 200 epochs,
and a cohort cannot share it. With `--plots` both draw all 16.

One torch thread (what a study trial gets), the two sides alternating, median of `--repeats`
ratios. One line per case: `cohort method=<mlp|reduction|rnn> K=<k> device=<cpu|cuda> ratio=<sequential/cohort>`;
the reduction and RNN cases are not built yet and say so. `--smoke` shrinks the run (tests).

    python benchmarks/cohort.py [--epochs 200] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import numpy as np
import torch

from seqrep import data as datasets
from seqrep.method import TrialContext
from seqrep.session import run_local
from trainables.kit.cohort import run_mlp_cohort

K = 16
SHAPE = dict(hidden_layers=2, hidden_units=25, transfer="sigmoid", batch_size=10)


def draw_configs(k: int, seed: int = 0) -> list[dict]:
    """k configs from table7-nn-toy's rmsprop ranges, the network shape fixed."""
    rng = np.random.default_rng(seed)
    return [dict(SHAPE, step_rate=float(np.exp(rng.uniform(np.log(1e-4), np.log(0.1)))),
                 decay=float(rng.uniform(0.1, 0.99)), momentum=float(rng.uniform(0.0, 0.99))) for _ in range(k)]


def time_mlp(configs: list[dict], contexts: list[TrialContext], data, repeats: int) -> float:
    """Median over `repeats` of (sequential seconds / cohort seconds)."""
    ratios = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            for k, (config, context) in enumerate(zip(configs, contexts)):
                run_local("mlp", config, context, out_dir=f"{out}/solo{k}")
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            run_mlp_cohort(configs, contexts, data, artifact_dirs=[f"{out}/member{k}" for k in range(len(configs))])
            cohort = time.perf_counter() - start
        ratios.append(sequential / cohort)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 members, 2 epochs, 1 repeat")
    parser.add_argument("--plots", action="store_true", help="both sides draw each trial's predictive plot")
    args = parser.parse_args()
    k, epochs, repeats = (2, 2, 1) if args.smoke else (K, args.epochs, args.repeats)

    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    data = datasets.load("toy")
    if not args.plots:
        # y_std = 1: a standardisation that changes no metric (scale 1, log 1 = 0) but marks the
        # data as standardised, so that neither side draws the Figure-6 plot (module docstring)
        data = dataclasses.replace(data, y_std=np.ones(data.y_train.shape[1]))
    contexts = [TrialContext(dataset="toy", data=data, max_epochs=epochs, seed=seed, metric="valid_nll", mode="min")
                for seed in range(k)]
    configs = draw_configs(k)
    warm = [dataclasses.replace(c, max_epochs=1) for c in contexts[:2]]
    time_mlp(configs[:2], warm, data, 1)  # warm-up: imports, matplotlib, kernels
    ratio = time_mlp(configs, contexts, data, repeats)
    print(f"cohort method=mlp K={k} device=cpu ratio={ratio:.2f}")
    for method in ("reduction", "rnn"):
        print(f"cohort method={method} K={k} device=cpu skipped: not built yet")


if __name__ == "__main__":
    main()
