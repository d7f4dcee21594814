"""`trainables.nn.fused_tanh`: the FD tanh recurrence's GPU path, one fused step per time step.

On the CPU (what CI has) the fused loops run with the reference step functions in place of the
Triton kernels: forward they are the eager loops' operations in the same order (bit for bit), the
gradients the same chain rule summed in another order (float64, 1e-12). Where Triton is installed,
its kernels run under the interpreter (`TRITON_INTERPRET=1`, a subprocess) against the eager loops
in float32. Which tensors take the fused path is asserted exactly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.nn import fused_tanh
from trainables.nn import stacked_recurrent as sr
from trainables.nn.recurrent import FastDropoutRNN, FDTanhRecurrence

ROOT = Path(__file__).resolve().parents[1]
RATES = [sr.Rates(0.8, 0.7, 0.8), sr.Rates(1.0, 0.5, 1.0, fd_final_layer=False), sr.Rates(0.9, 0.6, 0.5)]


@pytest.fixture
def fused(monkeypatch):
    """Every tensor takes the fused path, with the reference step functions as its kernels."""
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: True)
    monkeypatch.setattr(fused_tanh, "kernels", lambda: (fused_tanh.forward_step, fused_tanh.backward_step))


def solo_case(steps: int):
    g = torch.Generator().manual_seed(steps)
    in_mean = torch.randn(steps, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    in_var = torch.rand(steps, 3, 8, generator=g, dtype=torch.float64)
    in_var[0, 0] = 0.0  # a deterministic unit
    in_var.requires_grad_()
    w_rec = (0.5 * torch.randn(8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    outs = FDTanhRecurrence.apply(in_mean, in_var, w_rec, 0.7)
    grads = [torch.randn(steps, 3, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    return [*outs, *torch.autograd.grad(outs, (in_mean, in_var, w_rec), grads)]


@pytest.mark.parametrize("steps", [1, 9])
def test_fused_solo_recurrence_equals_the_eager_loop(monkeypatch, fused, steps):
    got = solo_case(steps)
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: False)
    want = solo_case(steps)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # forward: the same operations
    for a, b in zip(got[2:], want[2:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_solo_recurrence_passes_gradcheck(fused):
    g = torch.Generator().manual_seed(4)
    args = (torch.randn(5, 2, 4, generator=g, dtype=torch.float64, requires_grad=True),
            (torch.rand(5, 2, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_(),
            (0.5 * torch.randn(4, 4, generator=g, dtype=torch.float64)).requires_grad_())
    assert torch.autograd.gradcheck(lambda m, v, w: FDTanhRecurrence.apply(m, v, w, 0.6), args)


def stacked_case(shapes):
    nets = []
    for k, r in enumerate(RATES):
        net = FastDropoutRNN(12, 16, 12, "tanh", 1 - r.keep_input, 1 - r.keep_hidden, 1 - r.keep_output,
                             r.fd_final_layer)
        net.initialise(0.1, 0.1, 1.1, generator=torch.Generator().manual_seed(k))
        nets.append(net.double())
    stack = sr.StackedFDRNN([n.state_dict() for n in nets], RATES)
    g = torch.Generator().manual_seed(5)
    xs = [(torch.rand(t, b, 12, generator=g) > 0.7).double() for t, b in shapes]
    logits = stack.forward_members(xs)
    sum((z * torch.randn(z.shape, generator=g, dtype=torch.float64)).sum() for z in logits).backward()
    return logits, [p.grad for p in stack.params], stack.forward_shared(xs[0])


@pytest.mark.parametrize("shapes", [[(9, 4), (13, 3), (5, 4)], [(6, 2), (6, 2), (6, 2)]])
def test_fused_stacked_recurrence_equals_the_eager_loop(monkeypatch, fused, shapes):
    """Members of their own lengths and batch sizes (members leaving the packed loop early), and all alike."""
    logits, grads, shared = stacked_case(shapes)
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: False)
    want_logits, want_grads, want_shared = stacked_case(shapes)
    assert all(torch.equal(a, b) for a, b in zip(logits, want_logits))
    assert torch.equal(shared, want_shared)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_only_cuda_tensors_take_the_fused_path(monkeypatch):
    monkeypatch.delenv("SEQREP_FUSED", raising=False)
    assert fused_tanh.enabled(torch.zeros(2)) is False
    cuda_like = torch.empty(2, device="meta")  # no CUDA here: a stand-in that says it is one
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(fused_tanh, "_has_triton", lambda: True)
    assert fused_tanh.enabled(cuda_like) is True
    monkeypatch.setenv("SEQREP_FUSED", "0")
    assert fused_tanh.enabled(cuda_like) is False
    monkeypatch.setenv("SEQREP_FUSED", "1")
    monkeypatch.setattr(fused_tanh, "_has_triton", lambda: False)
    assert fused_tanh.enabled(cuda_like) is False


TRITON_CHECK = """
import os, sys, torch
sys.path[:0] = ["platform", ".", "benchmarks"]
import fused_agreement
from trainables.nn import fused_tanh
fused_tanh.enabled = lambda x: os.environ["SEQREP_FUSED"] != "0"
fused_agreement.STEPS = 6
worst = 0.0
for case in (fused_agreement.solo, fused_agreement.stacked):
    os.environ["SEQREP_FUSED"] = "0"
    eager = case(torch.device("cpu"))
    os.environ["SEQREP_FUSED"] = "1"
    got = case(torch.device("cpu"))
    worst = max([worst] + [((a - b).abs().max() / a.abs().max()).item() for a, b in zip(eager, got)])
print(worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed (a CUDA machine has it)")
def test_triton_kernels_agree_with_the_eager_loops_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", TRITON_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 1e-5  # float32 rounding (2.5e-6 on an H200 at T = 100)
