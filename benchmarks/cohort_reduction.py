"""Cohorts of sequence reduction: K same-shape Table 10 trials as one stacked network against the same K one by one.

K OSP trials (Table 10, Section 3.5.1.2) on UCR CBF: table10-osp's fixed settings (32 hidden and
16 output units, rmsprop with step rate 1e-4, momentum 0.9, decay 0.9, spectral radius 1, no
normalisation), batch_fraction 0.25 for all (a cohort key), and the rest of its space drawn per
trial: transfer (tanh, softsign, rectifier, softplus), pooling (max, sum, mean, stochastic),
init_std uniform in [0.005, 1], penalty uniform in [1e-7, 0.1]; `epochs` epochs (default 15,
table10-osp's `max_epochs`: what each trial of `seqrep reproduce table10` runs), each trial with its
own seed. Fewer epochs weigh each trial's fixed finish (test embeddings of 900 series, the final
logistic regression, the saved embeddings) more, and that a cohort cannot share: 2 epochs give a
lower ratio than 15.

- sequential: the K trials through `seqrep.session.run_local("osp", ...)`, one after another;
- cohort: one `seqrep.session.run_local_cohort("osp", ...)` over the same configs and seeds.

Both sides judge every member every epoch by the same scikit-learn logistic regression (5-fold
cross-validated on CBF's 30 training series). A cohort fits its members' regressions together
(`judges.logreg_cv_errors`: one stacked loss evaluation for all, but each member's own L-BFGS-B
iterates), a solo trial its five folds together; the iterates themselves cannot be shared, and
they bound the ratio.
Each trial keeps its test embeddings (the report draws the selected trial's t-SNE map).

One torch thread and one BLAS thread (threadpoolctl, applied after scikit-learn's SciPy has loaded
its OpenBLAS: with two BLAS threads on a busy two-core machine a logistic regression took 15 times
longer). The two sides alternate, median of `repeats` ratios. On the CPU the clock is this
process's CPU time (unmoved by other jobs on a shared machine); on a GPU the wall time.

    python benchmarks/cohort_reduction.py [--k 16] [--device cpu] [--epochs 15] [--repeats 1]

prints `cohort method=reduction K=<k> device=<cpu|cuda> ratio=<sequential/cohort>`, or
`cohort method=reduction K=<k> device=<device> skipped: <reason>` when the data set (or the GPU) is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

EPOCHS = 15  # table10-osp's max_epochs
FIXED = dict(hidden_units=32, output_units=16, optimizer="rmsprop", step_rate=1e-4, momentum=0.9, decay=0.9,
             spectral_radius=1.0, normalise="none", batch_fraction=0.25)


def draw_configs(k: int, seed: int = 0) -> list[dict]:
    """k configs of table10-osp's space with its fixed keys and batch_fraction 0.25."""
    rng = np.random.default_rng(seed)
    return [dict(FIXED, transfer=str(rng.choice(["tanh", "softsign", "rectifier", "softplus"])),
                 pooling=str(rng.choice(["max", "sum", "mean", "stochastic"])),
                 init_std=float(rng.uniform(0.005, 1.0)), penalty=float(rng.uniform(1e-7, 0.1))) for _ in range(k)]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread for every library loaded, SciPy's own OpenBLAS included (loaded here first)."""
    from threadpoolctl import threadpool_limits

    from trainables.kit.judges import logreg_cv_error

    logreg_cv_error(np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3))  # loads SciPy's L-BFGS and its BLAS
    with threadpool_limits(limits=1):
        yield


def time_once(configs: list[dict], contexts: list, out: str) -> tuple[float, float]:
    from seqrep.session import run_local, run_local_cohort

    clock = time.process_time if contexts[0].device == "cpu" else time.perf_counter
    start = clock()
    for k, (config, context) in enumerate(zip(configs, contexts)):
        run_local("osp", config, context, out_dir=f"{out}/solo{k}")
    sequential = clock() - start
    start = clock()
    run_local_cohort("osp", configs, contexts)
    return sequential, clock() - start


def main(k: int = 16, device: str = "cpu", epochs: int = EPOCHS, repeats: int = 1) -> str:
    """The benchmark's line (module docstring)."""
    from seqrep import data as datasets
    from seqrep.errors import SeqrepError
    from seqrep.method import TrialContext

    head = f"cohort method=reduction K={k} device={device}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"{head} skipped: no CUDA device"
    try:
        data = datasets.load("ucr-cbf")
    except SeqrepError:
        return f"{head} skipped: ucr-cbf is not in the data directory {datasets.resolve_data_dir()}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    try:
        contexts = [TrialContext(dataset="ucr-cbf", data=data, max_epochs=epochs, seed=seed, metric="valid_error",
                                 mode="min", device=device) for seed in range(k)]
        configs = draw_configs(k)
        ratios = []
        with single_threaded_blas(), tempfile.TemporaryDirectory() as out:
            warm = [TrialContext(dataset="ucr-cbf", data=data, max_epochs=1, seed=s, metric="valid_error",
                                 mode="min", device=device) for s in range(2)]
            time_once(draw_configs(2), warm, str(Path(out) / "warm"))  # imports, kernels, scikit-learn
            for repeat in range(repeats):
                sequential, cohort = time_once(configs, contexts, str(Path(out) / f"r{repeat}"))
                ratios.append(sequential / cohort)
    finally:
        torch.set_num_threads(threads)
    return f"{head} ratio={statistics.median(ratios):.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(main(args.k, args.device, args.epochs, args.repeats), flush=True)
