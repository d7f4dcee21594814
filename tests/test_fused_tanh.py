"""`trainables.nn.fused_tanh`: the FD tanh recurrence's GPU path, one fused step per time step.

On the CPU (what CI has) the fused loops run with the reference step functions in place of the
Triton kernels: forward they are the eager loops' operations in the same order (bit for bit), the
gradients the same chain rule summed in another order (float64, 1e-12). Where Triton is installed,
its kernels run under the interpreter (`TRITON_INTERPRET=1`, a subprocess) against the eager loops
in float32. Which tensors take the fused path is asserted exactly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.nn import fused_tanh
from trainables.nn import step_graphs as sg
from trainables.nn import stacked_recurrent as sr
from trainables.nn.recurrent import FastDropoutRNN, FDTanhRecurrence

ROOT = Path(__file__).resolve().parents[1]
RATES = [sr.Rates(0.8, 0.7, 0.8), sr.Rates(1.0, 0.5, 1.0, fd_final_layer=False), sr.Rates(0.9, 0.6, 0.5)]


class Replay:
    """A stand-in for a recorded CUDA graph: replaying it calls the body it recorded (on the arena's buffers)."""

    recorded = 0

    def __init__(self, body):
        self.replay = body
        Replay.recorded += 1


@pytest.fixture
def fused(monkeypatch):
    """Every tensor takes the fused path, with the reference step functions as its kernels; chunks of
    3 steps, each "recorded" on its second run and "replayed" after (`Replay`), with fresh arenas."""
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: True)
    monkeypatch.setattr(fused_tanh, "kernels", lambda: (fused_tanh.forward_step, fused_tanh.backward_step))
    monkeypatch.setattr(sg, "CHUNK", 3)
    monkeypatch.setattr(sg, "_graphs_wanted", lambda device: True)
    monkeypatch.setattr(sg.Graphs, "_capture", lambda self, body: Replay(body))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(sg, "_ARENAS", type(sg._ARENAS)())
    Replay.recorded = 0


def solo_case(steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(steps + 100 * seed)
    in_mean = torch.randn(steps, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    in_var = torch.rand(steps, 3, 8, generator=g, dtype=torch.float64)
    in_var[0, 0] = 0.0  # a deterministic unit
    in_var.requires_grad_()
    w_rec = (0.5 * torch.randn(8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    outs = FDTanhRecurrence.apply(in_mean, in_var, w_rec, 0.7)
    grads = [torch.randn(steps, 3, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    return [*outs, *torch.autograd.grad(outs, (in_mean, in_var, w_rec), grads)]


@pytest.mark.parametrize("lengths", [(1, 1, 1), (9, 9, 9), (20, 20, 20), (7, 10, 7, 10, 10, 7)])
def test_fused_solo_recurrence_equals_the_eager_loop(monkeypatch, fused, lengths):
    """Calls on one arena with new inputs each: chunks run as they are, then are recorded, then replayed
    (in sequences of another length too: the last step, outside every backward chunk, differs)."""
    got = [solo_case(steps, seed) for seed, steps in enumerate(lengths)]
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: False)
    for seed, (steps, case) in enumerate(zip(lengths, got)):
        want = solo_case(steps, seed)
        assert torch.equal(case[0], want[0]) and torch.equal(case[1], want[1])  # forward: the same operations
        for a, b in zip(case[2:], want[2:]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # chunks [1, 4) [4, 7) ... below the length (forward), and below its last step (backward)
    assert Replay.recorded == {1: 0, 9: 2 + 2, 20: 6 + 6, 7: 3 + 2}[lengths[0]]


def test_segments_cut_a_loop_into_plain_runs_and_chunks_at_fixed_offsets(monkeypatch):
    monkeypatch.setattr(sg, "CHUNK", 3)
    assert sg.segments(1) == [(0, 1, None)]
    assert sg.segments(3) == [(0, 3, None)]
    assert sg.segments(8) == [(0, 1, None), (1, 4, 0), (4, 7, 1), (7, 8, None)]
    assert sg.segments(10) == [(0, 1, None), (1, 4, 0), (4, 7, 1), (7, 10, 2)]
    assert sg.segments(10, backward=True) == [(0, 1, None), (1, 4, 0), (4, 7, 1), (7, 10, None)]
    assert sg.segments(11, backward=True) == [(0, 1, None), (1, 4, 0), (4, 7, 1), (7, 10, 2), (10, 11, None)]


def test_an_arena_is_kept_per_shape_and_replaced_by_a_larger_one(monkeypatch):
    monkeypatch.setattr(sg, "_ARENAS", type(sg._ARENAS)())
    monkeypatch.setattr(sg, "KEEP", 2)
    shapes = lambda room: {"x": (room + 1, 2)}  # noqa: E731
    like = torch.zeros(1)
    first = sg.arena(("a",), 10, like, shapes, 0)
    assert first.room == 64 and first.t["x"].shape == (65, 2)
    assert sg.arena(("a",), 63, like, shapes, 0) is first  # 64 steps (+ 1 for the next input) fit
    bigger = sg.arena(("a",), 64, like, shapes, 0)
    assert bigger is not first and bigger.room == 128
    other = sg.arena(("b",), 5, like, shapes, 0)
    sg.arena(("a",), 5, like, shapes, 0)  # "a" used last: "b" goes when a third shape comes
    sg.arena(("c",), 5, like, shapes, 0)
    assert list(k[0] for k in sg._ARENAS) == ["a", "c"] and sg.arena(("b",), 5, like, shapes, 0) is not other
    monkeypatch.setattr(sg, "KEEP", 8)
    monkeypatch.setattr(sg, "KEEP_BYTES", 3 * 65 * 2 * 4)  # three arenas of 65 x 2 float32
    for name in "defg":
        sg.arena((name,), 5, like, shapes, 0)
    assert [k[0] for k in sg._ARENAS] == ["e", "f", "g"] and sg.arena(("g",), 5, like, shapes, 0).bytes == 520


def test_fused_solo_recurrence_passes_gradcheck(fused):
    g = torch.Generator().manual_seed(4)
    args = (torch.randn(5, 2, 4, generator=g, dtype=torch.float64, requires_grad=True),
            (torch.rand(5, 2, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_(),
            (0.5 * torch.randn(4, 4, generator=g, dtype=torch.float64)).requires_grad_())
    assert torch.autograd.gradcheck(lambda m, v, w: FDTanhRecurrence.apply(m, v, w, 0.6), args)


def three_members() -> sr.StackedFDRNN:
    """Three float64 FD-RNNs of 16 units, one per `RATES`, stacked."""
    nets = []
    for k, r in enumerate(RATES):
        net = FastDropoutRNN(12, 16, 12, "tanh", 1 - r.keep_input, 1 - r.keep_hidden, 1 - r.keep_output,
                             r.fd_final_layer)
        net.initialise(0.1, 0.1, 1.1, generator=torch.Generator().manual_seed(k))
        nets.append(net.double())
    return sr.StackedFDRNN([n.state_dict() for n in nets], RATES)


def stacked_case(shapes, seed: int = 5):
    stack = three_members()
    g = torch.Generator().manual_seed(seed)
    xs = [(torch.rand(t, b, 12, generator=g) > 0.7).double() for t, b in shapes]
    logits = stack.forward_members(xs)
    sum((z * torch.randn(z.shape, generator=g, dtype=torch.float64)).sum() for z in logits).backward()
    return logits, [p.grad for p in stack.params], stack.forward_shared(xs[0])


@pytest.mark.parametrize("shapes, other", [([(9, 4), (13, 3), (5, 4)], [(4, 4), (17, 3), (13, 4)]),
                                           ([(6, 2), (6, 2), (6, 2)], [(10, 2), (10, 2), (10, 2)])])
def test_fused_stacked_recurrence_equals_the_eager_loop(monkeypatch, fused, shapes, other):
    """Members of their own lengths and batch sizes (members leaving the packed loop early), and all
    alike; alternating with other lengths and inputs on one arena, either first (a chunk, recorded on
    its second run, is replayed whichever members have ended: they run on zeros)."""
    runs = [(order[i % 2], i) for order in ((shapes, other), (other, shapes)) for i in range(6)]
    got = []
    for n, (s, seed) in enumerate(runs):
        if n % 6 == 0:
            monkeypatch.setattr(sg, "_ARENAS", type(sg._ARENAS)())
        got.append(stacked_case(s, seed))
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: False)
    for (s, seed), (logits, grads, shared) in zip(runs, got):
        want_logits, want_grads, want_shared = stacked_case(s, seed)
        assert all(torch.equal(a, b) for a, b in zip(logits, want_logits))
        assert torch.equal(shared, want_shared)
        for a, b in zip(grads, want_grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert Replay.recorded > 0


class FakeStreams:
    """CPU stand-ins for the recording stream and the side stream of SEQREP_GRAPH_FORK: waits, which
    stream is current, and the step kernels, in the order they happen (`log`)."""

    def __init__(self):
        self.log, self.current = [], "main"

    def stream(self, name: str):
        streams = self

        class Stream:
            def wait_stream(self, other) -> None:
                streams.log.append(f"{name}<-{other.name}")

            @property
            def name(self) -> str:
                return name
        return Stream()

    @contextlib.contextmanager
    def use(self, stream):
        before, self.current = self.current, stream.name
        self.log.append(f"enter {stream.name}")
        try:
            yield
        finally:
            self.current = before
            self.log.append(f"leave {stream.name}")


def test_forked_products_join_before_the_step_kernel_and_change_no_number(monkeypatch, fused):
    """SEQREP_GRAPH_FORK=1: in every recorded step the second product runs on the side stream, forked
    after the previous step and joined before this step's kernel; the numbers are the eager loop's."""
    streams = FakeStreams()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: streams.stream(streams.current))
    monkeypatch.setattr(torch.cuda, "stream", streams.use)

    class ForkedReplay:  # a recorded chunk: its steps run with the side stream set, as while recording
        def __init__(self, graphs, body):
            self.graphs, self.body = graphs, body

        def replay(self):
            self.graphs.side = streams.stream("side")
            try:
                self.body()
            finally:
                self.graphs.side = None

    monkeypatch.setattr(sg.Graphs, "_capture", lambda self, body: ForkedReplay(self, body))
    forward, backward = fused_tanh.forward_step, fused_tanh.backward_step
    logged = lambda step: lambda *a: (streams.log.append("kernel"), step(*a))  # noqa: E731
    monkeypatch.setattr(fused_tanh, "kernels", lambda: (logged(forward), logged(backward)))
    got = [solo_case(20, seed) for seed in range(3)]  # chunks run, recorded, replayed
    forked = ["side<-main", "enter side", "leave side", "main<-side", "kernel"]
    steps = [streams.log[i:i + 5] for i, entry in enumerate(streams.log) if entry == "side<-main"]
    # the second and third calls replay: forward and backward, 6 chunks of 3 steps each
    assert len(steps) == 2 * 2 * 6 * 3 and all(step == forked for step in steps)
    assert streams.log.count("kernel") == 3 * 2 * 20  # every other step unforked
    monkeypatch.setattr(fused_tanh, "enabled", lambda x: False)
    for seed, case in enumerate(got):
        want = solo_case(20, seed)
        assert torch.equal(case[0], want[0]) and torch.equal(case[1], want[1])
        for a, b in zip(case[2:], want[2:]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def packed_case(shapes, packed: bool):
    """Logits at each member's own positions and the parameters' gradients, through the member path
    (`forward_members`) or the packed one (`forward_packed`, all layers over every position)."""
    stack = three_members()
    g = torch.Generator().manual_seed(9)
    xs = [(torch.rand(t, b, 12, generator=g) > 0.7).double() for t, b in shapes]
    weights = [torch.randn(t, b, 12, generator=g, dtype=torch.float64) for t, b in shapes]
    if packed:
        plan = stack.plan([t for t, _ in shapes], [b for _, b in shapes], stack.params[0])
        z = stack.forward_packed(plan.pack(xs), plan)
        logits = [z[plan.order.index(k), :t, :b] for k, (t, b) in enumerate(shapes)]
        (z * plan.pack(weights)).sum().backward()  # zero weights past each member's steps and sequences
    else:
        logits = stack.forward_members(xs)
        sum((z * w).sum() for z, w in zip(logits, weights)).backward()
    return [z.detach() for z in logits], [p.grad for p in stack.params]


@pytest.mark.parametrize("fused_path", [False, True])
def test_packed_layers_give_each_member_its_own_numbers(request, fused_path):
    """Padding (other members' longer steps, larger batches) enters no member's logits or gradients."""
    if fused_path:
        request.getfixturevalue("fused")
    shapes = [(9, 4), (13, 3), (5, 4)]
    for got, want in zip(packed_case(shapes, True), packed_case(shapes, False)):
        for a, b in zip(got, want):
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
from trainables.nn import step_graphs as sg
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
