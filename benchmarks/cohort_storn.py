"""Cohort of the `storn` method: K STORN trials trained as one stacked model against the same K run one by one.

K configurations drawn from table13-storn's space (the generating net's dropout rates, Adadelta's
step rate, momentum and decay, σ², σ²_in, ρ, ν) with the shape fixed: `--latent` latent units (32,
one of the space's three), `--hidden` sigmoid units in both nets (300, Section 4.4.1), minibatches of 16, each
trial with its own seed, on JSB Chorales (`$SEQREP_DATA` or the cache):

- sequential: the K trials through `seqrep.session.run_local("storn", ...)`, one after another;
- cohort: one `seqrep.session.run_local_cohort("storn", ...)` over the same configs and seeds.

Both sides train `--epochs` epochs (default 1: one pass over the training split, the validation
pass with K = 1 draws, the test pass at the best state with `--is-samples` draws (default 1;
the space's 100 make the test pass, which a cohort runs member by member as the solo runs do,
cost a dozen epochs), the per-epoch checkpoint); `--sequences` limits the training split to its
first N sequences. One torch thread (what a study trial gets), the two sides alternating after one
small warm-up, median of `--repeats` ratios (`cohort_rnn.compare`). The ratio is of process CPU time on the CPU, of wall
time (synchronised) on a GPU. Last line: `cohort method=storn K=<k> device=<cpu|cuda>
ratio=<sequential/cohort>`, or `cohort method=storn skipped: <reason>`.

    python benchmarks/cohort_storn.py [--k 16] [--latent 32] [--hidden 300] [--device cpu] [--epochs 1]
                                      [--is-samples 1] [--sequences N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from seqrep import data as datasets
from seqrep import memory
from seqrep.method import SeqrepError, TrialContext

SPACE = {  # table13-storn's choices; latent_units fixed, step_rate log-uniform in [0.01, 1]
    "p_drop_input": [0.0, 0.1, 0.2], "p_drop_hidden": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "p_drop_output": [0.0, 0.2, 0.5],
    "momentum": [0.0, 0.9, 0.95, 0.99, 0.995], "decay": [0.8, 0.9], "sigma2": [0.1, 0.01, 0.001, 0.0001],
    "sigma2_in": [0.1, 0.01, 0.001, 0.0001], "rho": [4.0, 4.2, 4.4, 4.8], "nu": [15, 25, 35, 50, None],
}
FIXED = dict(likelihood="bernoulli", bidirectional=False, cell="sigmoid", hidden_units=300, recognition_units=300,
             recognition_variance="fd", optimizer="adadelta", grad_norm=None, b_y=-0.8, valid_is_samples=1,
             batch_size=16)


def draw_configs(k: int, seed: int = 0, latent: int = 32, is_samples: int = 1, hidden: int = 300) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(FIXED, latent_units=latent, is_samples=is_samples, hidden_units=hidden, recognition_units=hidden,
                 step_rate=float(np.exp(rng.uniform(np.log(0.01), np.log(1.0)))),
                 **{key: values[rng.integers(len(values))] for key, values in SPACE.items()}) for _ in range(k)]


def _cohort_rnn():
    """`benchmarks/cohort_rnn.py` (the benchmarks are scripts, not a package): its `compare`."""
    path = Path(__file__).resolve().parent / "cohort_rnn.py"
    spec = importlib.util.spec_from_file_location("benchmarks_cohort_rnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(k: int = 16, device: str = "cpu", epochs: int = 1, sequences: int | None = None, repeats: int = 3,
         data_dir: str | None = None, latent: int = 32, is_samples: int = 1, hidden: int = 300) -> str:
    """Run the comparison and return its summary line (module docstring)."""
    if device == "cuda" and not torch.cuda.is_available():
        return "cohort method=storn skipped: no CUDA device"
    try:
        jsb = datasets.load("jsb", data_dir or os.environ.get("SEQREP_DATA"))
    except SeqrepError as err:  # its files are not in the data directory
        return f"cohort method=storn skipped: JSB Chorales not available ({err})"
    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    memory.keep_freed_memory()  # as every trial process does
    if sequences:
        jsb = dataclasses.replace(jsb, train=jsb.train[:sequences])
    contexts = [TrialContext(dataset="jsb", data=jsb, max_epochs=epochs, seed=seed, metric="valid_elbo_nll", mode="min",
                             device=device) for seed in range(k)]
    configs = draw_configs(k, latent=latent, is_samples=is_samples, hidden=hidden)
    ratio, wall_ratio = _cohort_rnn().compare("storn", configs, contexts, device, repeats)
    print(f"latent_units={latent} wall-time ratio={wall_ratio:.2f}")
    return f"cohort method=storn K={k} device={device} ratio={ratio:.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16, help="members (STORN trials)")
    parser.add_argument("--latent", type=int, default=32, help="latent units of every member")
    parser.add_argument("--is-samples", type=int, default=1, help="K of the test split's importance sampler")
    parser.add_argument("--hidden", type=int, default=300, help="units of both nets of every member")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=None, help="train on the first N sequences only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(main(args.k, args.device, args.epochs, args.sequences, args.repeats, args.data_dir, args.latent,
               args.is_samples, args.hidden))
