"""Training speed of the `rnn` method: frames per second over one epoch's minibatches, JSB and Piano-midi.de.

A fixed FD-RNN (tanh, `--hidden` units, dropout 0.1 / 0.2 / 0.2, rmsprop with momentum 0.9, batch
of 16 sequences) trains on the epoch's minibatches as `trainables.rnn` draws them (seed 0,
`batches(..., pool=4)`), forward, backward and optimiser step, on the CPU with `--threads`
threads (trials run with one). frames/s counts real, unpadded frames.

With `--baseline`, a second copy of the same net, run by the loop of commit 40d714c (autograd
through every step, each step's input read by indexing), trains on the same minibatches,
interleaved batch by batch in this process; its batch losses are compared with the current
path's (the largest relative difference is printed) and the last line is
`ratio=<current frames/s / baseline frames/s>`, the median over `--repeats` passes. Before that commit's fix a
3,800-step Piano-midi.de batch took tens of minutes in the baseline: `--max-steps` leaves
longer batches out of both runs.

    python benchmarks/rnn_epoch.py [--hidden 400] [--threads 1] [--batches N] [--repeats R] [--baseline] [--max-steps T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from seqrep import memory
from seqrep.data import load
from trainables.nn import variance as vp
from trainables.nn.optim import RmsProp
from trainables.nn.recurrent import FastDropoutRNN
from trainables.nn.sequences import batches, shift
from trainables.rnn import frame_nll

DATASETS = {"jsb": "JSB Chorales", "piano-midi": "Piano-midi.de"}


class IndexedLoopRNN(FastDropoutRNN):
    """The FD-RNN as commit 40d714c ran it: autograd through every step, inputs read as in_mean[t]."""

    def _fd_hidden(self, x):
        bias = self.core.bias_ih_l0 + self.core.bias_hh_l0
        in_mean, in_var = vp.fd_affine(x, None, self.core.weight_ih_l0, bias, self.keep_input)
        w_rec = self.core.weight_hh_l0
        w_rec_sq, keep = w_rec.square(), self.keep_hidden
        h_mean = x.new_zeros(x.shape[1], self.n_hidden)
        h_var = x.new_zeros(x.shape[1], self.n_hidden)
        means, variances = [], []
        for t in range(x.shape[0]):
            a_mean = in_mean[t] + keep * (h_mean @ w_rec.T)
            a_var = in_var[t] + (keep * h_var + keep * (1.0 - keep) * h_mean.square()) @ w_rec_sq.T
            h_mean, h_var = vp.tanh(a_mean, a_var)
            means.append(h_mean)
            variances.append(h_var)
        return torch.stack(means), torch.stack(variances)


def trainer(cls, hidden: int):
    model = cls(88, hidden, 88, "tanh", 0.1, 0.2, 0.2)
    model.initialise(0.01, 0.01, 1.1, generator=torch.Generator().manual_seed(0), nu=15)
    optimizer = RmsProp(model.parameters(), step_rate=1e-3, decay=0.9, momentum=0.9)

    def step(batch) -> tuple[float, float]:
        start = time.perf_counter()
        nll = frame_nll(model(shift(batch.x)), batch.x, batch.mask).sum()
        optimizer.zero_grad(set_to_none=True)
        (nll / batch.mask.sum()).backward()
        optimizer.step()
        return time.perf_counter() - start, float(nll.detach())

    return step


def run(name: str, args) -> None:
    train = [torch.tensor(s) for s in load(name, args.data_dir).split("train")]
    epoch = list(batches(train, 16, torch.Generator().manual_seed(1), pool=4))
    epoch = [b for b in epoch if b.x.shape[0] <= args.max_steps][: args.batches or None]
    frames = sum(int(b.mask.sum()) for b in epoch)
    padded = sum(b.mask.numel() for b in epoch)
    print(f"{name}: {len(epoch)} batches, {frames} frames ({frames / padded:.0%} of the padded steps), "
          f"longest {max(b.x.shape[0] for b in epoch)} steps")
    rates, base_rates, ratios, worst = [], [], [], 0.0
    for _ in range(args.repeats):  # each repeat trains fresh nets on the same minibatches
        current = trainer(FastDropoutRNN, args.hidden)
        baseline = trainer(IndexedLoopRNN, args.hidden) if args.baseline else None
        t_cur, t_base = [], []
        for i, batch in enumerate(epoch):
            if baseline is not None and i % 2:  # alternate which runs first
                t_base.append(baseline(batch))
            t_cur.append(current(batch))
            if baseline is not None and not i % 2:
                t_base.append(baseline(batch))
        rates.append(frames / sum(t for t, _ in t_cur))
        if baseline is not None:
            base_rates.append(frames / sum(t for t, _ in t_base))
            ratios.append(rates[-1] / base_rates[-1])
            worst = max([worst] + [abs(c - b) / abs(b) for (_, c), (_, b) in zip(t_cur, t_base)])
    print(f"{name}: current frames_per_s={statistics.median(rates):.0f} (median of {args.repeats})")
    if baseline is not None:
        print(f"{name}: baseline frames_per_s={statistics.median(base_rates):.0f}; "
              f"largest batch-loss difference {worst:.1e} relative")
        print(f"{name}: ratio={statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=0, help="the epoch's first N minibatches (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many passes")
    parser.add_argument("--max-steps", type=int, default=10**9, help="leave out batches longer than this")
    parser.add_argument("--baseline", action="store_true", help="also run commit 40d714c's loop, interleaved")
    parser.add_argument("--data-dir", default=os.environ.get("SEQREP_DATA"))
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (trials keep freed memory: seqrep.memory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        memory.keep_freed_memory()  # as every trial process does
    print(f"H={args.hidden} threads={args.threads} batch=16 pool=4 seed=0")
    for name in args.datasets:
        run(name, args)


if __name__ == "__main__":
    main()
