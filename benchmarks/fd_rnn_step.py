"""FD-RNN step cost: forward + backward of one batch, FD-RNN against torch's nn.RNN (tanh), same size.

H = 600 hidden units, B = 32 sequences, T = 100 steps, 88 inputs and outputs, Bernoulli loss. Both
run in this process on the CPU, and on the GPU too when one is present (there nn.RNN is cuDNN).
Each timing is the median of `--repeats` runs after `--warmup` runs.

Last line: `ratio=<fd_rnn / rnn>` (the CPU ratio, or the GPU ratio when a GPU ran).
Goal: <= 3.0 on the CPU, <= 2.0 against cuDNN on a GPU.

    python benchmarks/fd_rnn_step.py [--hidden 600] [--batch 32] [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from trainables.nn.recurrent import FastDropoutRNN


def step_time(model, x, device, warmup, repeats) -> float:
    target = x
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(device, args) -> float:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.steps, args.batch, 88, generator=g) < 0.1).float().to(device)
    plain = FastDropoutRNN(88, args.hidden, 88, "tanh").to(device)
    fd = FastDropoutRNN(88, args.hidden, 88, "tanh", p_drop_input=0.2, p_drop_hidden=0.3, p_drop_output=0.5).to(device)
    for m in (plain, fd):
        m.initialise(0.01, 0.01, 1.1, generator=torch.Generator().manual_seed(1))
        m.to(device)
    t_plain = step_time(plain, x, device, args.warmup, args.repeats)
    t_fd = step_time(fd, x, device, args.warmup, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{device.type}: {name}: rnn_s={t_plain:.4f} fd_rnn_s={t_fd:.4f} ratio={t_fd / t_plain:.3f}")
    return t_fd / t_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"H={args.hidden} B={args.batch} T={args.steps} inputs=88")
    ratio = compare(torch.device("cpu"), args)
    if torch.cuda.is_available():
        ratio = compare(torch.device("cuda"), args)
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
