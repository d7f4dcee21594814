"""`trainables.nn.stacked_recurrent.StackedFDRNN`'s evaluation, which runs its input and output
layers `EVAL_ROWS` rows at a time: the chunking changes no bit of the logits (against one chunk per
minibatch), and each member's logits equal its solo `FastDropoutRNN`'s to float rounding."""

from __future__ import annotations

import pytest
import torch

from trainables.nn import stacked_recurrent as sr
from trainables.nn.recurrent import FastDropoutRNN

RATES = [sr.Rates(0.8, 0.7, 0.8), sr.Rates(1.0, 0.5, 1.0, fd_final_layer=False), sr.Rates(0.9, 1.0, 0.5)]


def members():
    nets = []
    for k, r in enumerate(RATES):
        torch.manual_seed(k)
        net = FastDropoutRNN(12, 24, 12, "tanh", 1 - r.keep_input, 1 - r.keep_hidden, 1 - r.keep_output,
                             r.fd_final_layer)
        net.initialise(0.1, 0.1, 1.1, generator=torch.Generator().manual_seed(k))
        nets.append(net.eval())
    return nets


@pytest.mark.parametrize("steps,batch", [(37, 5), (3, 40)])
def test_chunked_evaluation_is_bit_for_bit_the_unchunked_one(monkeypatch, steps, batch):
    nets = members()
    stack = sr.StackedFDRNN([n.state_dict() for n in nets], RATES)
    x = (torch.rand(steps, batch, 12, generator=torch.Generator().manual_seed(9)) > 0.7).float()
    monkeypatch.setattr(sr, "EVAL_ROWS", 10**9)
    assert sr.chunks(steps, batch) == [(0, steps)]
    whole = stack.forward_shared(x).clone()
    monkeypatch.setattr(sr, "EVAL_ROWS", 16)
    assert len(sr.chunks(steps, batch)) == (steps if batch >= 16 else -(-steps // 3))
    chunked = stack.forward_shared(x)
    assert chunked.shape == (3, steps, batch, 12)
    assert torch.equal(chunked, whole)
    with torch.no_grad():
        for k, net in enumerate(nets):
            torch.testing.assert_close(chunked[k], net(x), rtol=1e-5, atol=1e-6)


def test_plans_are_by_length_for_the_eager_loops_and_in_member_order_for_the_fused_ones(monkeypatch):
    """On the CPU (eager loops) members are packed by decreasing length; where the fused loops run
    they stay in member order; and the eager loops refuse a plan not by length."""
    stack = sr.StackedFDRNN([n.state_dict() for n in members()], RATES)
    like = stack.params[0]
    eager = stack.plan([4, 9, 6], [2, 3, 3], like)
    assert eager.order == [1, 2, 0] and eager.counts == [3] * 4 + [2] * 2 + [1] * 3 and eager.by_length
    assert eager.packed_lengths == [9, 6, 4] and not eager.identity
    monkeypatch.setattr(sr.fused_tanh, "enabled", lambda x: True)
    fused = stack.plan([4, 9, 6], [2, 3, 3], like)
    assert fused.order == [0, 1, 2] and fused.identity and not fused.by_length and fused.counts == eager.counts
    monkeypatch.setattr(sr.fused_tanh, "enabled", lambda x: False)
    x = torch.zeros(3, 9, 3, 24)
    with pytest.raises(ValueError, match="^the eager loops run the members by decreasing length: build the plan "
                                         "with sort=True$"):
        sr.StackedTanhRecurrence.apply(fused, stack.params[1].detach(), x, x)
