"""How far the fused GPU recurrence (`trainables.nn.fused_tanh`) is from the eager one, on one GPU.

The FD-RNN's tanh recurrence, solo (`FDTanhRecurrence`, T=100, B=32, H=600) and stacked
(`StackedFDRNN`, 3 members of 64 units with their own lengths and batch sizes), forward and
backward, once with the fused per-step kernels (their chunks replayed as CUDA graphs, after two
calls with other inputs) and once with `SEQREP_FUSED=0`, in float32 on the same device: prints the
largest difference relative to each result's largest magnitude, per output and per gradient, and
the largest absolute difference between the graphs and the same kernels launched one by one
(`SEQREP_GRAPHS=0`; 0: the same numbers). Last line: `fused max_rel_diff=<largest>` (float32
rounding: ~1e-6), or `fused skipped: no CUDA device`.

    python benchmarks/fused_agreement.py
"""

from __future__ import annotations

import os

import torch

from trainables.nn import stacked_recurrent as sr
from trainables.nn.recurrent import FDTanhRecurrence, FastDropoutRNN

STEPS = 100  # the solo case: T = 100, B = 32, H = 600
RATES = [sr.Rates(0.8, 0.7, 0.8), sr.Rates(1.0, 0.5, 1.0, fd_final_layer=False), sr.Rates(0.9, 0.6, 0.5)]


def solo(device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    in_mean = torch.randn(STEPS, 32, 600, generator=g).to(device).requires_grad_()
    in_var = torch.rand(STEPS, 32, 600, generator=g).to(device).requires_grad_()
    w_rec = (torch.randn(600, 600, generator=g) / 600**0.5).to(device).requires_grad_()
    means, variances = FDTanhRecurrence.apply(in_mean, in_var, w_rec, 0.7)
    grads = [torch.randn(STEPS, 32, 600, generator=g).to(device) for _ in range(2)]
    return [means, variances, *torch.autograd.grad((means, variances), (in_mean, in_var, w_rec), grads)]


def stacked(device, seed: int = 1) -> list[torch.Tensor]:
    nets = []
    for k, r in enumerate(RATES):
        net = FastDropoutRNN(88, 64, 88, "tanh", 1 - r.keep_input, 1 - r.keep_hidden, 1 - r.keep_output,
                             r.fd_final_layer)
        net.initialise(0.01, 0.01, 1.1, generator=torch.Generator().manual_seed(k))
        nets.append(net)
    stack = sr.StackedFDRNN([n.state_dict() for n in nets], RATES, device)
    g = torch.Generator().manual_seed(seed)
    xs = [(torch.rand(t, b, 88, generator=g) < 0.1).float().to(device) for t, b in ((90, 16), (129, 5), (40, 16))]
    logits = stack.forward_members(xs)
    sum((z * torch.randn(z.shape, generator=g).to(device)).sum() for z in logits).backward()
    return logits + [p.grad for p in stack.params] + [stack.forward_shared(xs[0])]


def main() -> str:
    if not torch.cuda.is_available():
        return "fused skipped: no CUDA device"
    device, worst, graph_diff = torch.device("cuda"), 0.0, 0.0
    for name, case in (("solo", solo), ("stacked", stacked)):
        os.environ.update(SEQREP_FUSED="0")
        eager = case(device)
        os.environ.update(SEQREP_FUSED="1", SEQREP_GRAPHS="0")
        launched = case(device)
        os.environ.update(SEQREP_GRAPHS="1")
        for seed in (7, 8):  # other inputs on the same arenas: chunks run as they are, then are recorded
            case(device, seed)
        fused = case(device)  # replayed
        diffs = [((a - b).abs().max() / a.abs().max()).item() for a, b in zip(eager, fused)]
        print(f"{name}: " + " ".join(f"{d:.1e}" for d in diffs))
        worst = max(worst, *diffs)
        graph_diff = max(graph_diff, *((a - b).abs().max().item() for a, b in zip(launched, fused)))
    print(f"graphs against the same kernels launched one by one: max_abs_diff={graph_diff:.1e}")
    return f"fused max_rel_diff={worst:.1e}"


if __name__ == "__main__":
    print(main())
