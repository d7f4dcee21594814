"""Cohort of the `rnn` method: K FD-RNN trials trained as one stacked model against the same K run one by one.

K configurations drawn from table1-fd-rnn's space (dropout rates, fd_final_layer, rmsprop's step
rate, momentum and decay, σ², σ²_in, ρ, ν) with the shape fixed at `--hidden` tanh units (200) and
minibatches of 16 sequences, each trial with its own seed, on JSB Chorales (`$SEQREP_DATA` or the
cache):

- sequential: the K trials through `seqrep.session.run_local("rnn", ...)`, one after another;
- cohort: one `seqrep.session.run_local_cohort("rnn", ...)` over the same configs and seeds.

Both sides train `--epochs` epochs (default 1: one pass over the training split, the validation
pass, the test pass at the best state, the per-epoch checkpoint), `--sequences` limits the
training split to its first N sequences (a few minibatches). One torch thread (what a study trial
gets), the two sides alternating after one small warm-up, median of `--repeats` ratios.

The ratio is of process CPU time on the CPU (one thread, so it is the wall time of an idle
machine, and other jobs on a shared machine do not enter it; the wall-time ratio is printed
too), of wall time (synchronised) on a GPU. Last line:
`cohort method=rnn K=<k> device=<cpu|cuda> ratio=<sequential/cohort>`, or
`cohort method=rnn skipped: <reason>`.

    python benchmarks/cohort_rnn.py [--k 16] [--hidden 200] [--device cpu] [--epochs 1] [--sequences N] [--repeats 3]

The speed issue's GPU case is `--device cuda --k 8 --hidden 600` (`benchmarks/gpu_check.sh`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np
import torch

from seqrep import data as datasets
from seqrep.data.base import SequenceData
from seqrep.method import SeqrepError, TrialContext
from seqrep.session import run_local, run_local_cohort

SPACE = {  # table1-fd-rnn's choices, hidden_units fixed
    "p_drop_input": [0.0, 0.1, 0.2], "p_drop_hidden": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "p_drop_output": [0.0, 0.2, 0.5],
    "fd_final_layer": [True, False], "step_rate": [0.01, 0.005, 0.001, 0.0005, 0.0001, 0.00001],
    "momentum": [0.0, 0.9, 0.95, 0.99, 0.995], "decay": [0.8, 0.9], "sigma2": [0.1, 0.01, 0.001, 0.0001],
    "sigma2_in": [0.1, 0.01, 0.001, 0.0001], "rho": [1.0, 1.05, 1.1, 1.2], "nu": [15, 25, 35, 50, None],
}
FIXED = dict(cell="tanh", optimizer="rmsprop", b_h=0.0, b_y=-0.8, grad_norm=None, hidden_units=200, batch_size=16)


def draw_configs(k: int, seed: int = 0, hidden: int = 200) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(FIXED, hidden_units=hidden, **{key: values[rng.integers(len(values))] for key, values in SPACE.items()})
            for _ in range(k)]


def clock(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def once(method: str, configs: list[dict], contexts: list[TrialContext], device: str) -> tuple[float, float, float, float]:
    """(sequential, cohort) seconds by the ratio's clock, then by the wall clock."""
    start, wall = clock(device), time.perf_counter()
    for config, context in zip(configs, contexts):
        run_local(method, config, context)
    sequential, sequential_wall = clock(device) - start, time.perf_counter() - wall
    start, wall = clock(device), time.perf_counter()
    run_local_cohort(method, configs, contexts)
    return sequential, clock(device) - start, sequential_wall, time.perf_counter() - wall


def compare(method: str, configs: list[dict], contexts: list[TrialContext], device: str,
            repeats: int) -> tuple[float, float]:
    """After a warm-up (two members, one epoch on a few sequences), `repeats` alternations of the
    sequential and the cohort run, a line each; the median ratios (the clock's, the wall's)."""
    data = contexts[0].data
    small = SequenceData(data.name, data.train[:16], data.valid[:8], data.test[:8])
    once(method, configs[:2], [dataclasses.replace(c, data=small, max_epochs=1) for c in contexts[:2]], device)
    times = []
    for _ in range(repeats):  # each repeat's line as it ends
        times.append(once(method, configs, contexts, device))
        sequential, cohort, sequential_wall, cohort_wall = times[-1]
        print(f"sequential {sequential:.1f} s, cohort {cohort:.1f} s ({'cpu' if device == 'cpu' else 'wall'}); "
              f"wall: sequential {sequential_wall:.1f} s, cohort {cohort_wall:.1f} s", flush=True)
    return statistics.median(s / c for s, c, _, _ in times), statistics.median(s / c for _, _, s, c in times)


def main(k: int = 16, device: str = "cpu", epochs: int = 1, sequences: int | None = None, repeats: int = 3,
         data_dir: str | None = None, hidden: int = 200) -> str:
    """Run the comparison and return its summary line (module docstring)."""
    if device == "cuda" and not torch.cuda.is_available():
        return "cohort method=rnn skipped: no CUDA device"
    try:
        jsb = datasets.load("jsb", data_dir or os.environ.get("SEQREP_DATA"))
    except SeqrepError as err:  # its files are not in the data directory
        return f"cohort method=rnn skipped: JSB Chorales not available ({err})"
    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    if sequences:
        jsb = dataclasses.replace(jsb, train=jsb.train[:sequences])
    contexts = [TrialContext(dataset="jsb", data=jsb, max_epochs=epochs, seed=seed, metric="valid_nll", mode="min",
                             device=device) for seed in range(k)]
    ratio, wall_ratio = compare("rnn", draw_configs(k, hidden=hidden), contexts, device, repeats)
    print(f"hidden_units={hidden} wall-time ratio={wall_ratio:.2f}")
    return f"cohort method=rnn K={k} device={device} ratio={ratio:.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16, help="members (FD-RNN trials)")
    parser.add_argument("--hidden", type=int, default=200, help="hidden units of every member")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=None, help="train on the first N sequences only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(main(args.k, args.device, args.epochs, args.sequences, args.repeats, args.data_dir, args.hidden))
