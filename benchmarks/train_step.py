"""Train step: one toy NN trial through seqrep versus an idiomatic PyTorch loop doing the same work.

Both sides run in this process on one torch thread (what a study trial gets), interleaved
(baseline, seqrep, baseline, seqrep, ...), so a neighbour's load hits both alike. The config is
fixed: NN (`mlp`) with 2 x 25 sigmoid units, minibatches of 10, rmsprop, 1000 epochs on `toy`
(50 training points: 5 steps per epoch) with per-epoch validation.

- seqrep: `seqrep.session.run_local("mlp", ...)`, the whole trial as a study runs it, minus Ray
  and MLflow (benchmarks/platform_overhead.py measures those): climin's rmsprop with Nesterov
  momentum, the shared epoch loop with its best-state tracking and checkpoints, per-epoch
  validation metrics and the final test evaluation.
- baseline: the same network, data, epochs and minibatch count in the loop a PyTorch user writes,
  with `torch.optim.RMSprop(foreach=True)`, a training-loss sum per epoch and one validation
  forward per epoch (its MSE).

Last line: `ratio=<seqrep / baseline>`, the median over `--repeats` pairs. Goal: <= 1.2.

    python benchmarks/train_step.py [--epochs 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from torch import nn

from seqrep import data as datasets
from seqrep.method import TrialContext
from seqrep.session import run_local

CONFIG = dict(hidden_layers=2, hidden_units=25, transfer="sigmoid", step_rate=1e-3, decay=0.9, momentum=0.9,
              batch_size=10)


def baseline(data, epochs: int, seed: int) -> float:
    """The idiomatic loop; returns the last validation MSE (so that nothing is optimised away)."""
    x, y = (torch.tensor(np.asarray(a, dtype=np.float32)) for a in data.split("train"))
    x_valid, y_valid = (torch.tensor(np.asarray(a, dtype=np.float32)) for a in data.split("valid"))
    torch.manual_seed(seed)
    units = CONFIG["hidden_units"]
    model = nn.Sequential(nn.Linear(1, units), nn.Sigmoid(), nn.Linear(units, units), nn.Sigmoid(),
                          nn.Linear(units, 1))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=CONFIG["step_rate"], alpha=CONFIG["decay"],
                                    momentum=CONFIG["momentum"], foreach=True)
    generator = torch.Generator().manual_seed(seed)
    valid_mse = float("nan")
    for _ in range(epochs):
        model.train()
        total = torch.zeros(())
        order = torch.randperm(x.shape[0], generator=generator)
        for xb, yb in zip(x[order].split(CONFIG["batch_size"]), y[order].split(CONFIG["batch_size"])):
            loss = nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * xb.shape[0]
        train_loss = float(total) / x.shape[0]  # noqa: F841 (reported in a real loop)
        model.eval()
        with torch.no_grad():
            valid_mse = float(nn.functional.mse_loss(model(x_valid), y_valid))
    return valid_mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)  # what each study trial gets (--cpus-per-trial 1)
    data = datasets.load("toy")
    context = TrialContext(dataset="toy", data=data, max_epochs=args.epochs, seed=0, metric="valid_nll", mode="min")
    run_local("mlp", CONFIG, dataclasses.replace(context, max_epochs=2))  # warm-up: imports, plots
    baseline(data, 2, 0)
    ratios = []
    for repeat in range(args.repeats):
        t0 = time.perf_counter()
        baseline(data, args.epochs, 0)
        base_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_local("mlp", CONFIG, context)
        seqrep_s = time.perf_counter() - t0
        ratios.append(seqrep_s / base_s)
        steps = args.epochs * -(-data.split("train")[0].shape[0] // CONFIG["batch_size"])
        print(f"repeat={repeat} baseline_s={base_s:.2f} seqrep_s={seqrep_s:.2f} "
              f"baseline_us_per_step={1e6 * base_s / steps:.0f} seqrep_us_per_step={1e6 * seqrep_s / steps:.0f} "
              f"ratio={ratios[-1]:.3f}")
    print(f"ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
