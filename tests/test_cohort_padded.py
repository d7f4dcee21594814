"""Cohorts of NN, DN, FD and IVN nets of different depths and widths, padded to one shape
(`trainables.nn.padding`, `trainables.kit.padded_networks`): each member still equals its solo run.

A member padded to the cohort's largest depth and width computes its own net's numbers: its own
parameters sit in the first entries of the larger layers, zeros elsewhere, its extra hidden layers
pass their input through, and the optimiser never moves a padded entry. What differs from its solo
run is the order in which the padded kernels sum the same nonzero products (float rounding), so the
history and final metrics must agree within 1e-5 relative over 20 epochs on `toy`, as for
same-shape cohorts; the model file holds the member's own net.
"""

from __future__ import annotations

import pytest
import torch

import seqrep.data
from seqrep import cohorts
from seqrep.method import TrialContext
from seqrep.session import run_local, run_local_cohort
from trainables import fd, ivn, mdn, mlp
from trainables.kit import padded_networks
from trainables.nn import padding
from trainables.nn.feedforward import MLP
from trainables.nn.stacked import StackedMLP, StackedRmsProp
from trainables.nn.stacked_fdnet import StackedFastDropoutNet

from cohort_checks import assert_members_trained_apart, assert_resume_at_3_equals_the_whole, compare_with_solo

REL = 1e-5
EPOCHS = 20
METHODS = {"mlp": mlp, "mdn": mdn, "fd": fd, "ivn": ivn}
SEEDS = [3, 7, 11]
# three depths, two widths, both transfer functions; the widest member is not the deepest
SHAPES = [dict(hidden_layers=3, hidden_units=25, transfer="sigmoid", step_rate=1e-3, decay=0.9, momentum=0.9),
          dict(hidden_layers=1, hidden_units=10, transfer="rectifier", step_rate=3e-3, decay=0.5, momentum=0.0),
          dict(hidden_layers=2, hidden_units=25, transfer="sigmoid", step_rate=1e-2, decay=0.99, momentum=0.5)]
DROPOUT = dict(p_drop_input=0.1, p_drop_hidden=0.2)
EXTRA = {"mlp": {}, "mdn": dict(components=1), "fd": DROPOUT, "ivn": dict(DROPOUT, input_variance=0.01, beta_min=0.01)}
METRICS = {"mlp": "valid_nll", "mdn": "valid_nll", "fd": "valid_mse", "ivn": "valid_nll"}  # as the table7 spaces


@pytest.fixture(scope="module")
def toy():
    return seqrep.data.load("toy")


def context(data, method: str, seed: int, epochs: int = EPOCHS) -> TrialContext:
    return TrialContext(dataset="toy", data=data, max_epochs=epochs, seed=seed, metric=METRICS[method], mode="min")


def members(method: str) -> list[dict]:
    return [dict(shape, batch_size=10, **EXTRA[method]) for shape in SHAPES]


@pytest.mark.parametrize("method", METHODS)
def test_padded_members_equal_their_solo_runs(toy, method):
    configs = members(method)
    sessions = run_local_cohort(method, configs, [context(toy, method, s) for s in SEEDS])
    assert_members_trained_apart(sessions, EPOCHS)
    for session, config, seed in zip(sessions, configs, SEEDS):
        solo = run_local(method, config, context(toy, method, seed))
        compare_with_solo(session, solo, REL)
        # the model file is the member's own net: its names and shapes, loadable into its solo net
        assert {k: v.shape for k, v in session.model["model"].items()} == \
               {k: v.shape for k, v in solo.model["model"].items()}
        for name, value in session.model["model"].items():
            torch.testing.assert_close(value, solo.model["model"][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_a_resumed_padded_cohort_equals_the_uninterrupted_one(toy, method):
    contexts = [context(toy, method, s, epochs=6) for s in SEEDS]
    assert_resume_at_3_equals_the_whole(METHODS[method], method, members(method), contexts)


def test_placements_put_each_parameter_in_the_first_entries_of_its_padded_layer():
    torch.manual_seed(0)
    small, large = MLP(3, 2, 1, 4, "sigmoid"), MLP(3, 2, 3, 6, "sigmoid")
    own = list(small.parameters())
    where = padding.placements([p.shape for p in own], depth=1, padded_depth=3)
    # W_0, b_0 stay layer 0's; the output layer (W_1, b_1) becomes the padded net's last (its 7th, 8th)
    assert [p.target for p in where] == [0, 1, 6, 7]
    masks = padding.place(own, list(large.parameters()), where)
    assert [int(m.sum()) for m in masks] == [12, 4, 0, 0, 0, 0, 8, 2]
    assert all(float(p.detach()[~m].abs().sum()) == 0.0 for p, m in zip(large.parameters(), masks))
    assert all(torch.equal(a, b) for a, b in zip(padding.extract(list(large.parameters()), where), own))
    with pytest.raises(ValueError, match="^a member of depth 4 cannot be padded to depth 3$"):
        padding.layer_targets(4, 3)


def test_a_padded_member_computes_its_own_nets_function_and_gradient():
    torch.manual_seed(0)
    own = [MLP(3, 2, 1, 4, "sigmoid"), MLP(3, 2, 3, 6, "rectifier"), MLP(3, 2, 2, 5, "sigmoid")]
    configs = [mlp.Config(hidden_layers=n.net.__len__() // 2, hidden_units=n.net[0].out_features,
                          transfer=t) for n, t in zip(own, ("sigmoid", "rectifier", "sigmoid"))]
    padded = padded_networks.pad(configs, own, mlp.build, 3, 2)
    model = StackedMLP(padded.networks, depths=padded.depths)
    x, y = torch.randn(3, 7, 3), torch.randn(3, 7, 2)
    out, state = model.forward_train(x)
    grads = model.views(torch.empty_like(model.storage))
    model.backward(state, 2 * (out - y), grads)
    for k, net in enumerate(own):
        params = list(net.parameters())
        for p in params:
            p.grad = None
        value = net(x[k])
        ((value - y[k]) ** 2).sum().backward()
        torch.testing.assert_close(out[k], value.detach(), rtol=1e-6, atol=1e-7)
        mine = padding.extract([g[k] for g in grads], padded.placements[k])
        for got, p in zip(mine, params):
            torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-7)


def test_padded_entries_never_move():
    """Gradients at padded entries are not zero (a padded sigmoid unit outputs 1/2), but the
    optimiser leaves those entries, their step and their squared-gradient average as they are."""
    torch.manual_seed(0)
    own = [MLP(1, 1, 1, 3, "sigmoid"), MLP(1, 1, 2, 5, "sigmoid")]
    configs = [mlp.Config(hidden_layers=1, hidden_units=3, transfer="sigmoid"),
               mlp.Config(hidden_layers=2, hidden_units=5, transfer="sigmoid")]
    padded = padded_networks.pad(configs, own, mlp.build, 1, 1)
    model = StackedMLP(padded.networks, depths=padded.depths)
    optimizer = StackedRmsProp(model, [0.1, 0.1], [0.9, 0.9], [0.9, 0.9], real=padded.real)
    x, y = torch.randn(2, 4, 1), torch.randn(2, 4, 1)
    grad = torch.empty_like(model.storage)
    start = model.storage.clone()
    nonzero_at_padding = False
    for _ in range(5):
        out, state = model.forward_train(x)
        model.backward(state, 2 * (out - y), model.views(grad))
        nonzero_at_padding |= bool(grad[~padded.real].abs().sum() > 0)
        optimizer.step(grad)
    assert nonzero_at_padding
    assert float(model.storage[~padded.real].abs().sum()) == 0.0
    assert float(optimizer.last_step[~padded.real].abs().sum()) == 0.0
    assert bool((optimizer.moving_mean_squared[~padded.real] == 1.0).all())
    assert bool((model.storage[padded.real] != start[padded.real]).all())  # every real entry moved


def test_small_nets_group_by_batch_size_and_larger_ones_by_shape():
    group = padded_networks.cohort_group(("batch_size",), mlp.Config)
    shapes = [(3, 50, 10), (1, 100, 10), (2, 10, 25), (2, 50, 50), (2, 51, 50), (3, 300, 64), (3, 300, 64),
              (1, 10, 25), (1, 25, 50)]
    configs = [dict(hidden_layers=l, hidden_units=u, batch_size=b) for l, u, b in shapes]
    # where a space leaves a key out, the Config's default decides (batch 10, 50 units: padded;
    # batch 10, 300 units: not)
    assert group(dict(hidden_layers=2)) == group(dict(hidden_layers=1)) == ("None",)
    assert group(dict(hidden_units=300)) == ("None", "None", "300")
    # 50 x 50^2 = PADDED_WORK pads; 50 x 51^2 and 64 x 300^2 exceed it and need their own shape
    assert padded_networks.PADDED_WORK == 50 * 50 ** 2
    assert cohorts.group(configs, ["batch_size"], 16, group) == [[0, 1], [2, 7], [3, 8], [4], [5, 6]]
    grouped = [[configs[i] for i in c] for c in cohorts.group(configs, ["batch_size"], 16, group)]
    assert cohorts.describe(grouped, ["batch_size"], padded_networks.PADDED_KEYS) == (
        "9 configs in 5 cohort(s) of sizes 2, 2, 2, 2, 1 (members share batch_size; 3 cohort(s) pad members "
        "of different hidden_layers and hidden_units to one shape)")


@pytest.mark.parametrize("module", [mlp, mdn, fd, ivn])
def test_every_feed_forward_method_pads_its_small_nets(module):
    assert module.COHORT_PADDED == padded_networks.PADDED_KEYS == ("hidden_layers", "hidden_units")
    assert module.COHORT_KEYS == (("batch_size", "components") if module is mdn else ("batch_size",))


def test_padded_units_are_those_beyond_a_members_width_or_depth():
    masks = padding.padded_units([1, 3, 2], [2, 4, 3], padded_depth=3, padded_width=4)
    assert [m.squeeze(1).int().tolist() for m in masks] == [
        [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]],
        [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]],
        [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]]
    assert padding.padded_units([2, 2], [5, 5], 2, 5) == [None, None]


@pytest.mark.parametrize("beta_min", [None, 0.01])
def test_a_padded_fast_dropout_member_computes_its_own_nets_moments_and_gradient(beta_min):
    """Members of depths 1-3 and widths 4-6 (IVN: betas away from 1, its per-layer `rho` placed by
    layer), one without any noise (its variances exactly 0: the rectifier's masked branch)."""
    torch.manual_seed(0)
    shapes = [(1, 4, "sigmoid", 0.1, 0.3, 0.0), (3, 6, "rectifier", 0.2, 0.1, 0.05), (2, 5, "rectifier", 0.0, 0.0, 0.0)]
    module = fd if beta_min is None else ivn
    configs = [module.Config(hidden_layers=d, hidden_units=w, transfer=t, p_drop_input=p_in, p_drop_hidden=p_hid,
                             **({} if beta_min is None else dict(input_variance=iv, beta_min=beta_min)))
               for d, w, t, p_in, p_hid, iv in shapes]
    own = [module.build(config, 3, 2) for config in configs]
    if beta_min is not None:
        with torch.no_grad():
            for k, net in enumerate(own):
                net.rho.add_(torch.linspace(-0.5, 0.5, net.rho.numel()) * (k + 1))
    padded = padded_networks.pad(configs, own, module.build, 3, 2, StackedFastDropoutNet.PER_LAYER)
    model = StackedFastDropoutNet(padded.networks, depths=padded.depths, widths=padded.widths)
    x, y = torch.randn(3, 7, 3), torch.randn(3, 7, 4)
    out, state = model.forward_train(x)
    grads = model.views(torch.empty_like(model.storage))
    model.backward(state, 2 * (out - y), grads)
    assert torch.equal(model(x), out)  # evaluation computes the same numbers
    for k, net in enumerate(own):
        value = torch.cat(net(x[k]), dim=-1)
        ((value - y[k]) ** 2).sum().backward()
        torch.testing.assert_close(out[k], value.detach(), rtol=1e-6, atol=1e-7)
        mine = dict(zip(padded.names[k], padding.extract([g[k] for g in grads], padded.placements[k])))
        assert list(mine) == [name for name, _ in net.named_parameters()]
        for name, p in net.named_parameters():
            torch.testing.assert_close(mine[name], p.grad, rtol=1e-5, atol=1e-6, msg=f"member {k}, {name}")
    assert torch.equal(out[2, :, 2:], torch.zeros(7, 2))  # no noise anywhere: V[y] = 0 exactly, as solo
