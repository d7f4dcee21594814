"""One STORN training epoch (Table 13's nets) with the written-out sigmoid recurrence, against autograd's loop.

A `table13-storn` model (300 sigmoid units in both nets, 32 latent units, learned recognition
rates, minibatches of 16, Adadelta) trains `--epochs` passes over JSB Chorales' training split
(`$SEQREP_DATA` or the cache), twice in this process, alternating `--repeats` times:

- baseline: the recurrences through autograd, step by step (how `FastDropoutRNN._fd_hidden` ran the
  sigmoid and learned-rate loops before `trainables.nn.fd_recurrence.FDRecurrence`);
- seqrep: `FDRecurrence` (the same forward numbers, its backward written out).

Both start from the same initialisation and draw the same minibatches and z samples. One torch
thread (what a study trial gets), process CPU time. Prints training frames per second of both and
last `storn_epoch ratio=<baseline/seqrep>` (median), or `storn_epoch skipped: <reason>`.

    python benchmarks/storn_epoch.py [--epochs 1] [--repeats 3] [--sequences N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from seqrep import data as datasets
from seqrep import memory
from seqrep.method import SeqrepError
from trainables import storn
from trainables.kit import sequence_vae
from trainables.kit.sequence_models import climin_optimizer, tensor_splits
from trainables.nn import recurrent
from trainables.nn import variance as vp

CONFIG = dict(latent_units=32, p_drop_input=0.1, p_drop_hidden=0.2, p_drop_output=0.2, step_rate=0.3, momentum=0.9,
              decay=0.9, sigma2=0.01, sigma2_in=0.01, rho=4.2, nu=25)


def autograd_loop(in_mean, in_var, w_rec, keep, transfer: str):
    """The FD recurrence through autograd, step by step: `FastDropoutRNN._fd_hidden`'s loop before
    `FDRecurrence` (also the reference of tests/test_fd_recurrence.py)."""
    rule = vp.sigmoid if transfer == "sigmoid" else vp.tanh
    h_mean = in_mean.new_zeros(in_mean.shape[1:])
    h_var = torch.zeros_like(h_mean)
    means, variances = [], []
    for in_mean_t, in_var_t in zip(in_mean.unbind(0), in_var.unbind(0)):
        a_mean = in_mean_t + keep * (h_mean @ w_rec.T)
        a_var = in_var_t + (keep * h_var + keep * (1.0 - keep) * h_mean.square()) @ w_rec.square().T
        h_mean, h_var = rule(a_mean, a_var)
        means.append(h_mean)
        variances.append(h_var)
    return torch.stack(means), torch.stack(variances)


class AutogradLoop:
    """`FDRecurrence.apply`'s signature (solo nets), run as `autograd_loop`."""

    @staticmethod
    def apply(in_mean, in_var, w_rec, keep, transfer, active=None):
        return autograd_loop(in_mean, in_var, w_rec, keep, transfer)


def once(splits, n_features: int, epochs: int, baseline: bool) -> float:
    """Training frames per second of `epochs` passes (process CPU time)."""
    config = storn.Config.from_dict(CONFIG)
    model = storn.new_model(config, n_features, seed=0)
    optimizer = climin_optimizer(config, model.parameters())
    train_epoch = sequence_vae.make_train_epoch(model, optimizer, splits["train"], config.batch_size,
                                                torch.Generator().manual_seed(1), None, torch.device("cpu"))
    kept = recurrent.FDRecurrence
    recurrent.FDRecurrence = AutogradLoop if baseline else kept
    try:
        start = time.process_time()
        for _ in range(epochs):
            train_epoch()
        seconds = time.process_time() - start
    finally:
        recurrent.FDRecurrence = kept
    return epochs * sum(len(s) for s in splits["train"]) / seconds


def main(epochs: int = 1, repeats: int = 3, sequences: int | None = None, data_dir: str | None = None) -> str:
    try:
        jsb = datasets.load("jsb", data_dir or os.environ.get("SEQREP_DATA"))
    except SeqrepError as err:
        return f"storn_epoch skipped: JSB Chorales not available ({err})"
    torch.set_num_threads(1)
    memory.keep_freed_memory()  # as every trial process does
    splits = tensor_splits(jsb)
    if sequences:
        splits["train"] = splits["train"][:sequences]
    ratios = []
    for _ in range(repeats):
        old, new = once(splits, jsb.n_features, epochs, True), once(splits, jsb.n_features, epochs, False)
        ratios.append(new / old)
        print(f"autograd loop {old:,.0f} frames/s, FDRecurrence {new:,.0f} frames/s", flush=True)
    return f"storn_epoch ratio={statistics.median(ratios):.2f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=None, help="train on the first N sequences only")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(main(args.epochs, args.repeats, args.sequences, args.data_dir))
