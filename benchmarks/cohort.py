"""Cohorts: K same-shape trials trained as one vectorised model against the same K run one by one.

Cases `mlp` and `mdn`: K = 16 NN (DN) trials on `toy` with table7-nn-toy's (table7-dn-toy's)
space, the shape fixed at 2 x 25 units and minibatches of 10 (the method's `COHORT_KEYS`), the
rest drawn: transfer function (sigmoid or rectifier, per member), step rate log-uniform in
[1e-4, 0.1], decay uniform in [0.1, 0.99], momentum uniform in [0, 0.99]; 200 epochs, each trial
with its own seed. Case `fd`: the same for K = 16 FD trials (table7-fd-toy's space), with both
dropout rates drawn too (0, 0.1, ..., 0.5, as its quniform). Cases `mlp-padded` and
`mdn-padded`: as `mlp` and `mdn`, but each member also draws its depth (1, 2 or 3 hidden layers)
and width (10, 25 or 50 units) from the space's choices, so the cohort pads them to 3 x 50
(`trainables.kit.padded_networks`; the space's 100 units are past its bound on minibatches of 10
only at 50, so they are left out). Case `fd-padded`: as `fd`, depths and widths drawn as in
`mlp-padded`.

- sequential: the K trials through `seqrep.session.run_local(method, ...)`, one after another;
- cohort: one `seqrep.session.run_local_cohort(method, ...)` over the same configs and seeds.

Case `fawn`: Table 8's FAWN-VB cohort, the 10 train/test splits of `uci-boston` from
`$SEQREP_DATA` (skipped, with the reason, when that is not set or lacks the set) as K = 10 members
with table8-fawn-vb's fixed values (1 x 50 rectifiers, Adam 0.001, minibatches of 128), each its
own split and seed, for a fixed `--fawn-epochs` (100; no plateau stop, so both sides run them all).

Both sides go through the method contract with `LocalSession`s, so both build and snapshot every
member's checkpoint every epoch. Neither side draws the per-trial predictive plot (Figure 6)
unless `--plots` is given: it costs ~0.13 s of Matplotlib per trial on either side, as much as a
third of a solo trial's 200 epochs, and a cohort cannot share it. With `--plots` both draw all K.

One torch thread (what a study trial gets), the two sides alternating, median of `--repeats`
ratios. On the CPU the clock is this process's CPU time (with one thread the wall time of an idle
machine, and unmoved by other jobs on a shared one); on a GPU the wall time. One line per case: `cohort method=<name> K=<k> device=<cpu|cuda> ratio=<sequential/cohort>`.
Cases `reduction`, `rnn` and `storn` live in `benchmarks/cohort_reduction.py`, `benchmarks/cohort_rnn.py`
and `benchmarks/cohort_storn.py` (each a `main(k, device) -> str` returning its line); a file not written yet prints a `skipped:`
line. `--smoke` shrinks the run of the regression cases (tests); `--cases` picks cases.

    python benchmarks/cohort.py [--epochs 200] [--fawn-epochs 100] [--repeats 3]
                                [--cases mlp,mdn,fd,mlp-padded,mdn-padded,fd-padded,fawn,reduction,rnn,storn]
                                [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqrep import data as datasets
from seqrep.method import TrialContext
from seqrep.session import run_local, run_local_cohort

K = 16
CASES = ("mlp", "mdn", "fd", "mlp-padded", "mdn-padded", "fd-padded", "fawn", "reduction", "rnn", "storn")
# each method's fixed keys (table7-nn-toy, table7-dn-toy, table7-fd-toy)
REGRESSION = {"mlp": {}, "mdn": {"components": 1}, "fd": {}, "mlp-padded": {}, "mdn-padded": {"components": 1},
              "fd-padded": {}}
PADDED_LAYERS, PADDED_UNITS = [1, 2, 3], [10, 25, 50]  # the padded cases' shapes
DROPOUT_RATES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # table7-fd-toy's quniform [0, 0.5, 0.1]
SHAPE = dict(hidden_layers=2, hidden_units=25, batch_size=10)
FAWN_K = 10  # Table 8's splits
# table8-fawn-vb's fixed values; no plateau stop: a fixed number of epochs on both sides
FAWN = dict(hidden_layers=1, hidden_units=50, transfer="rectifier", step_rate=0.001, init_noise=0.2, batch_size=128,
            init_std=0.2, patience=None)
HERE = Path(__file__).resolve().parent


def draw_configs(case: str, k: int, seed: int = 0) -> list[dict]:
    """k configs from table7-nn-toy's (table7-dn-toy's, table7-fd-toy's) space, the shape fixed
    (drawn too for the padded cases)."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(k):
        config = dict(SHAPE, **REGRESSION[case], transfer=str(rng.choice(["sigmoid", "rectifier"])),
                      step_rate=float(np.exp(rng.uniform(np.log(1e-4), np.log(0.1)))),
                      decay=float(rng.uniform(0.1, 0.99)), momentum=float(rng.uniform(0.0, 0.99)))
        if case.endswith("-padded"):
            config.update(hidden_layers=int(rng.choice(PADDED_LAYERS)), hidden_units=int(rng.choice(PADDED_UNITS)))
        if case.startswith("fd"):
            config.update(p_drop_input=float(rng.choice(DROPOUT_RATES)), p_drop_hidden=float(rng.choice(DROPOUT_RATES)))
        configs.append(config)
    return configs


def time_regression(method: str, configs: list[dict], contexts: list[TrialContext], repeats: int) -> float:
    """Median over `repeats` of (sequential seconds / cohort seconds)."""
    clock = time.process_time if contexts[0].device == "cpu" else time.perf_counter
    ratios = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = clock()
            for k, (config, context) in enumerate(zip(configs, contexts)):
                run_local(method, config, context, out_dir=f"{out}/solo{k}")
            sequential = clock() - start
            start = clock()
            run_local_cohort(method, configs, contexts)
            cohort = clock() - start
        ratios.append(sequential / cohort)
    return statistics.median(ratios)


def regression_case(case: str, k: int, device: str, epochs: int, repeats: int, plots: bool) -> str:
    data = datasets.load("toy")
    if not plots:
        # y_std = 1: a standardisation that changes no metric (scale 1, log 1 = 0) but marks the
        # data as standardised, so that neither side draws the Figure-6 plot (module docstring)
        data = dataclasses.replace(data, y_std=np.ones(data.y_train.shape[1]))
    contexts = [TrialContext(dataset="toy", data=data, max_epochs=epochs, seed=seed, metric="valid_nll",
                             mode="min", device=device) for seed in range(k)]
    configs, method = draw_configs(case, k), case.removesuffix("-padded")
    warm = [dataclasses.replace(c, max_epochs=1) for c in contexts[:2]]
    time_regression(method, configs[:2], warm, 1)  # warm-up: imports, matplotlib, kernels
    ratio = time_regression(method, configs, contexts, repeats)
    return f"cohort method={case} K={k} device={device} ratio={ratio:.2f}"


def fawn_case(k: int, device: str, epochs: int, repeats: int) -> str:
    """K splits of uci-boston as one FAWN-VB cohort against the K solo runs (module docstring)."""
    head = f"cohort method=fawn K={k} device={device}"
    data_dir = os.environ.get("SEQREP_DATA")
    if not data_dir:
        return f"{head} skipped: SEQREP_DATA is not set (the real uci-boston files are needed)"
    try:
        data = datasets.load("uci-boston", data_dir)
    except Exception as err:  # noqa: BLE001 - any reason the files cannot be read is a reason to skip
        return f"{head} skipped: uci-boston not loadable from $SEQREP_DATA={data_dir}: {err}"
    if data.n_splits < k:
        return f"{head} skipped: uci-boston has {data.n_splits} splits, fewer than {k}"
    configs = [dict(FAWN, split=split) for split in range(k)]
    contexts = [TrialContext(dataset="uci-boston", data=data, max_epochs=epochs, seed=split, metric="valid_loss",
                             mode="min", device=device) for split in range(k)]
    warm = [dataclasses.replace(c, max_epochs=1) for c in contexts[:2]]
    time_regression("fawn_vb", configs[:2], warm, 1)  # warm-up: imports, kernels
    ratio = time_regression("fawn_vb", configs, contexts, repeats)
    return f"{head} ratio={ratio:.2f}"


def external_case(name: str, k: int, device: str) -> str:
    """The line of `benchmarks/cohort_<name>.py`'s `main(k, device)`, or a `skipped:` line."""
    path = HERE / f"cohort_{name}.py"
    if not path.exists():
        return f"cohort method={name} K={k} device={device} skipped: benchmarks/{path.name} not written yet"
    spec = importlib.util.spec_from_file_location(f"benchmarks_cohort_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(k, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--fawn-epochs", type=int, default=100, help="case fawn's epochs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--smoke", action="store_true", help="regression cases: 2 members, 2 epochs, 1 repeat")
    parser.add_argument("--plots", action="store_true", help="both sides draw each trial's predictive plot")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    k, epochs, repeats = (2, 2, 1) if args.smoke else (K, args.epochs, args.repeats)

    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    for case in cases:
        if case in REGRESSION:
            line = regression_case(case, k, args.device, epochs, repeats, args.plots)
        elif case == "fawn":
            line = fawn_case(2 if args.smoke else FAWN_K, args.device, 2 if args.smoke else args.fawn_epochs, repeats)
        else:
            line = external_case(case, k, args.device)
        print(line, flush=True)


if __name__ == "__main__":
    main()
