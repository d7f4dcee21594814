"""FD-RNN step cost: forward + backward of one batch, FD-RNN against torch's nn.RNN (tanh), same size.

H = 600 hidden units, B = 32 sequences, T = 100 steps, 88 inputs and outputs, Bernoulli loss. Both
run in this process on the CPU, and on the GPU too when one is present (there nn.RNN is cuDNN).
The two nets alternate, `--repeats`
pairs after `--warmup` pairs; the ratio is the median of the pairs' ratios, the times the medians.
The CPU runs with `--threads` threads (default 1, as trials run).

On a GPU the FD-RNN runs as trials run it: its recurrence's chunks of steps replayed as CUDA graphs
(`trainables.nn.step_graphs`; SEQREP_GRAPHS=0: every kernel launched by the host). It also measures
both whole nets, forward and backward, captured as CUDA graphs (`torch.cuda.make_graphed_callables`,
for a fixed input shape), against eager cuDNN and against graphed cuDNN.

Last line: `ratio=<fd_rnn / rnn>` (the CPU ratio, or the eager GPU ratio when a GPU ran).
Goal: <= 2.5 on the CPU with one thread (two recurrent products per step put the floor near 2),
<= 2.0 against cuDNN on a GPU.

    python benchmarks/fd_rnn_step.py [--hidden 600] [--batch 32] [--steps 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seqrep import memory
from trainables.nn.recurrent import FastDropoutRNN


def step_time(model, x, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = F.binary_cross_entropy_with_logits(model(x), x)
    model.zero_grad(set_to_none=True)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def nets(device, hidden: int) -> tuple[FastDropoutRNN, FastDropoutRNN]:
    """The plain net (torch's nn.RNN inside) and the FD-RNN, initialised on the CPU (its generator), then moved."""
    plain = FastDropoutRNN(88, hidden, 88, "tanh")
    fd = FastDropoutRNN(88, hidden, 88, "tanh", p_drop_input=0.2, p_drop_hidden=0.3, p_drop_output=0.5)
    for m in (plain, fd):
        m.initialise(0.01, 0.01, 1.1, generator=torch.Generator().manual_seed(1))
    return plain.to(device), fd.to(device)


def compare(device, args, plain=None, fd=None, label: str = "") -> float:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.steps, args.batch, 88, generator=g) < 0.1).float().to(device)
    if plain is None:
        plain, fd = nets(device, args.hidden)
    t_plain, t_fd = [], []
    for i in range(args.warmup + args.repeats):  # interleaved, so that other load on the machine hits both alike
        pair = (step_time(plain, x, device), step_time(fd, x, device))
        if i >= args.warmup:
            t_plain.append(pair[0])
            t_fd.append(pair[1])
    ratio = statistics.median(f / p for f, p in zip(t_fd, t_plain))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{device.type}{label}: {name}: rnn_s={statistics.median(t_plain):.4f} fd_rnn_s={statistics.median(t_fd):.4f} "
          f"ratio={ratio:.3f}")
    return ratio


def graphed(args) -> None:
    """The GPU comparison with CUDA-graphed nets: FD graphed vs cuDNN eager, and both graphed."""
    device = torch.device("cuda")
    x = torch.zeros(args.steps, args.batch, 88, device=device)
    plain = nets(device, args.hidden)[0]
    try:
        fd_graphed = torch.cuda.make_graphed_callables(nets(device, args.hidden)[1], (x,))
        compare(device, args, plain, fd_graphed, " (FD-RNN cuda-graphed, nn.RNN eager)")
        plain_graphed = torch.cuda.make_graphed_callables(nets(device, args.hidden)[0], (x,))
        compare(device, args, plain_graphed, fd_graphed, " (both cuda-graphed)")
    except Exception as err:  # a measurement beside the figure: say why it is missing, keep the figure
        print(f"cuda-graphed: not measured: {type(err).__name__}: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (trials run with one)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (trials keep freed memory: seqrep.memory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        memory.keep_freed_memory()  # as every trial process does
    print(f"H={args.hidden} B={args.batch} T={args.steps} inputs=88")
    ratio = compare(torch.device("cpu"), args)
    if torch.cuda.is_available():
        ratio = compare(torch.device("cuda"), args)
        graphed(args)
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
