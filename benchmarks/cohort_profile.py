"""Where an `rnn` cohort's time goes: one epoch of the cohort and of its members' solo runs, profiled.

`cohort_rnn.py` gives the ratio; this says why it is what it is. The K FD-RNN configs of
`cohort_rnn.py` (`--hidden` units, minibatches of 16, JSB Chorales from `$SEQREP_DATA`) train
as one stacked model (`trainables.kit.rnn_stack.Stacked`) and as K solo nets
(`trainables.kit.rnn_model`), each after two warm-up epochs (on a GPU the first records the CUDA
graphs of the recurrence, the second replays them). Then, per side, one epoch timed (synchronised)
and one epoch under `torch.profiler`, reported per minibatch (the cohort's minibatch holds K
members' minibatches; a solo figure is one trial's):

- `wall_ms`: the timed epoch's wall time;
- `device_ms`: the GPU's kernel time (the profiler's self device time; `n/a` on the CPU), and
  `busy` = device_ms / wall_ms: near 1 the side is bound by the GPU's arithmetic and latency,
  well below by the host (Python, dispatch, launches);
- `launches`: kernel launches, copies and CUDA-graph replays the host issued (on the CPU: aten
  operators called from Python or autograd, not from within another operator);
- then the side's largest kernels (operators on the CPU) by total self time (for the solo side,
  the first member's).

On the CPU the cohort trains each member's layers on its own rows and a GPU's packed layers are
not used (`rnn_stack.packed_training`), so the CPU lines show the CPU's path, not a GPU's.

Lines `profile side=<cohort|solo> K=<k> device=<cpu|cuda> minibatches=<n> wall_ms=... device_ms=...
busy=... launches=...`, each followed by its top lines, or `profile skipped: <reason>`.
`benchmarks/gpu_check.sh` runs it on a GPU (`--device cuda --k 8 --hidden 600`).

    python benchmarks/cohort_profile.py [--device cpu] [--k 8] [--hidden 200] [--sequences N] [--top 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from seqrep import data as datasets
from seqrep.method import SeqrepError
from trainables import rnn
from trainables.kit import rnn_model
from trainables.kit.rnn_stack import Stacked
from trainables.kit.sequence_models import climin_optimizer, tensor_splits

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch",
            "cudaMemcpyAsync", "cudaMemsetAsync")


def _draw_configs(k: int, hidden: int) -> list[dict]:
    """`cohort_rnn.py`'s configs (a script beside this one, not a package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_cohort_rnn", Path(__file__).with_name("cohort_rnn.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.draw_configs(k, hidden=hidden)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_time(row) -> float:
    """A profiler row's self time on the device, in microseconds (the attribute's name moved in torch 2.4)."""
    return float(getattr(row, "self_device_time_total", getattr(row, "self_cuda_time_total", 0.0)))


def measure(epoch, device: torch.device, minibatches: int, top: int) -> tuple[dict, list[str]]:
    """`epoch()` once timed and once profiled: the per-minibatch figures and the top lines."""
    _sync(device)
    start = time.perf_counter()
    epoch()
    _sync(device)
    wall = (time.perf_counter() - start) * 1e3 / minibatches
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        epoch()
        _sync(device)
    rows = prof.key_averages()
    if device.type == "cuda":
        launches = sum(r.count for r in rows if r.key in LAUNCHES)
        # the kernels' own rows (the operators that launched them carry the same time again)
        kernels = [r for r in rows if getattr(r, "device_type", None) == DeviceType.CUDA
                   and not getattr(r, "is_user_annotation", False)]
        busy_rows = sorted(kernels, key=_device_time, reverse=True)
        device_ms = sum(_device_time(r) for r in busy_rows) / 1e3 / minibatches
        lines = [f"  {_device_time(r) / 1e3 / minibatches:8.3f} ms {r.count / minibatches:7.1f}x  {r.key[:90]}"
                 for r in busy_rows[:top]]
    else:
        launches = sum(1 for e in prof.events() if e.name.startswith("aten::")
                       and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))
        device_ms = None
        ops = sorted((r for r in rows if r.key.startswith("aten::")), key=lambda r: r.self_cpu_time_total,
                     reverse=True)
        lines = [f"  {r.self_cpu_time_total / 1e3 / minibatches:8.3f} ms {r.count / minibatches:7.1f}x  {r.key}"
                 for r in ops[:top]]
    return {"wall_ms": wall, "device_ms": device_ms, "launches": launches / minibatches}, lines


def _line(side: str, k: int, device: torch.device, minibatches: int, figures: dict) -> str:
    device_ms = figures["device_ms"]
    busy = "n/a" if device_ms is None else f"{device_ms / figures['wall_ms']:.2f}"
    shown = "n/a" if device_ms is None else f"{device_ms:.2f}"
    return (f"profile side={side} K={k} device={device.type} minibatches={minibatches} "
            f"wall_ms={figures['wall_ms']:.2f} device_ms={shown} busy={busy} launches={figures['launches']:.1f}")


def main(k: int = 8, device: str = "cpu", hidden: int = 200, sequences: int | None = None, top: int = 8,
         data_dir: str | None = None) -> list[str]:
    """Profile both sides; returns the printed lines (module docstring)."""
    if device == "cuda" and not torch.cuda.is_available():
        return ["profile skipped: no CUDA device"]
    try:
        jsb = datasets.load("jsb", data_dir or os.environ.get("SEQREP_DATA"))
    except SeqrepError as err:
        return [f"profile skipped: JSB Chorales not available ({err})"]
    torch.set_num_threads(1)
    dev = torch.device(device)
    splits = tensor_splits(jsb)
    if sequences:
        splits = dict(splits, train=splits["train"][:sequences])
    configs = [rnn.Config.from_dict(c) for c in _draw_configs(k, hidden)]
    minibatches = -(-len(splits["train"]) // configs[0].batch_size)
    stack = Stacked(configs, list(range(k)), splits, jsb.n_features, dev)
    for _ in range(2):
        stack.train_epoch()
    figures, lines = measure(stack.train_epoch, dev, minibatches, top)
    out = [_line("cohort", k, dev, minibatches, figures), *lines]
    solo = []
    for seed, config in enumerate(configs):
        net = rnn_model.build_model(config, jsb.n_features, seed).to(dev)
        optimizer, generator = climin_optimizer(config, net.parameters()), rnn_model.order_generator(seed)

        def epoch(net=net, optimizer=optimizer, generator=generator, config=config) -> None:
            rnn_model.train_epoch(net, optimizer, splits["train"], config, generator, dev)

        for _ in range(2):
            epoch()
        solo.append(measure(epoch, dev, minibatches, top))
    mean = {key: None if solo[0][0][key] is None else sum(f[key] for f, _ in solo) / k for key in solo[0][0]}
    out += [_line("solo", k, dev, minibatches, mean), *solo[0][1]]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8, help="members (FD-RNN trials)")
    parser.add_argument("--hidden", type=int, default=200, help="hidden units of every member")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sequences", type=int, default=None, help="train on the first N sequences only")
    parser.add_argument("--top", type=int, default=8, help="kernels (operators) shown per side")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    for line in main(args.k, args.device, args.hidden, args.sequences, args.top, args.data_dir):
        print(line, flush=True)
