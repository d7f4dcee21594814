"""Sparse initialisation (Table 1's ν, climin's sparsify_columns) and the spectral radius (ρ)."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.nn.initialise import in_threads, set_spectral_radius, sparsify_columns
from trainables.nn.recurrent import FastDropoutRNN


def weights(model):
    return {"W_in": model.core.weight_ih_l0, "W_rec": model.core.weight_hh_l0, "W_out": model.out.weight}


def initialised(cell, hidden, nu, rho, seed):
    model = FastDropoutRNN(88, hidden, 88, cell)
    model.initialise(0.01, 0.1, rho, generator=torch.Generator().manual_seed(seed), nu=nu)
    return model


@pytest.mark.parametrize("cell,rho", [("tanh", 1.2), ("sigmoid", 4.4), ("lstm", None), ("torch-lstm", None)])
@pytest.mark.parametrize("nu", [15, 50])
def test_every_unit_keeps_exactly_nu_incoming_weights_and_rho_is_exact(cell, rho, nu):
    model = initialised(cell, 60, nu, rho, seed=0)
    for name, w in weights(model).items():
        n_out, n_in = w.shape
        counts = (w != 0).sum(1)  # torch's (out, in): a row is one receiving unit, climin's column
        assert counts.eq(min(nu, n_in)).all(), (name, counts.unique())
    if rho is not None:
        radius = torch.linalg.eigvals(model.core.weight_hh_l0.detach().double()).abs().max().item()
        assert radius == pytest.approx(rho, abs=1e-6)


def test_nu_at_or_above_the_fan_in_leaves_the_matrix_dense():
    """Table 4's ν 14...200 meets LSTMs of 100 units: ν >= 100 keeps W_rec (fan-in 100) dense, and
    ν >= 88 keeps W_in (88 notes) dense; ν = 99 sparsifies W_rec only."""
    for nu in (100, 150):
        model = initialised("lstm", 100, nu, None, seed=1)
        assert all((w != 0).all() for w in weights(model).values())
    model = initialised("lstm", 100, 99, None, seed=1)
    assert (model.core.weight_hh_l0 != 0).sum(1).eq(99).all() and (model.core.weight_ih_l0 != 0).all()
    dense = initialised("lstm", 100, None, None, seed=1)
    assert all((w != 0).all() for w in weights(dense).values())


def test_kept_weights_keep_their_drawn_values_and_nothing_is_redrawn():
    """The zeros are chosen after every weight is drawn, so the sparse net's non-zeros are the
    dense net's values at the same seed, exactly (without ρ, which rescales W_rec)."""
    sparse, dense = initialised("tanh", 40, 15, None, seed=2), initialised("tanh", 40, None, None, seed=2)
    for (name, s), d in zip(weights(sparse).items(), weights(dense).values()):
        kept = s != 0
        assert torch.equal(s[kept], d[kept]), name
        assert torch.equal(s, d * kept), name


def test_same_seed_same_pattern_other_seed_other_pattern():
    a, b, c = (initialised("tanh", 40, 15, 1.1, seed=s) for s in (3, 3, 4))
    for wa, wb, wc in zip(weights(a).values(), weights(b).values(), weights(c).values()):
        assert torch.equal(wa, wb)
        assert not torch.equal(wa != 0, wc != 0)


def test_the_kept_positions_are_uniform_without_replacement():
    """Each entry of a row survives with probability nu / n. Over 4000 rows of 20 with nu = 5 each
    column's survival count is Binomial(4000, 1/4): within 5 standard deviations (27.4) of 1000."""
    w = torch.randn(4000, 20, generator=torch.Generator().manual_seed(5)).add_(10.0)  # no zero drawn
    sparsify_columns(w, 5, torch.Generator().manual_seed(6))
    kept = (w != 0).sum(0).double()
    assert (w != 0).sum(1).eq(5).all()
    assert ((kept - 1000.0).abs() < 5 * math.sqrt(4000 * 0.25 * 0.75)).all(), kept


def test_nu_null_is_dense_and_nu_below_one_is_an_error():
    w = torch.ones(3, 4)
    sparsify_columns(w, None)
    assert w.eq(1).all()
    with pytest.raises(ValueError, match="nu >= 1 weights per unit, but got nu=0"):
        sparsify_columns(w, 0)


def test_set_spectral_radius_of_a_sparse_matrix():
    w = torch.randn(30, 30, generator=torch.Generator().manual_seed(7))
    sparsify_columns(w, 3, torch.Generator().manual_seed(8))
    set_spectral_radius(w, 1.05)
    assert torch.linalg.eigvals(w.double()).abs().max().item() == pytest.approx(1.05, abs=1e-6)


def test_initialisations_in_parallel_threads_are_those_made_one_after_another(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))  # four threads, even on fewer cores
    rhos = [1.0, 1.05, 1.1, 1.2, 0.9, 1.0]

    def initialise(net: FastDropoutRNN, rho: float, seed: int) -> FastDropoutRNN:
        net.initialise(0.01, 0.01, rho, generator=torch.Generator().manual_seed(seed), nu=15)
        return net

    nets = [FastDropoutRNN(12, 60, 12, "tanh") for _ in rhos]
    one_by_one = [initialise(FastDropoutRNN(12, 60, 12, "tanh"), rho, seed) for seed, rho in enumerate(rhos)]
    assert in_threads(initialise, nets, rhos, range(6)) == nets  # in order
    for a, b in zip(nets, one_by_one):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    radius = torch.linalg.eigvals(nets[3].core.weight_hh_l0.detach().double()).abs().max().item()
    assert radius == pytest.approx(1.2, abs=1e-6)
    assert in_threads(initialise, [], [], []) == []


def test_rnn_config_maps_nu_and_rejects_a_bad_value():
    from seqrep.method import SeqrepError
    from trainables import rnn, storn

    assert rnn.Config.from_dict({"nu": 15}).nu == 15 and rnn.Config().nu is None
    assert rnn.Config().grad_norm is None and storn.Config().nu is None
    with pytest.raises(SeqrepError, match="nu is null or an integer >= 1"):
        rnn.Config.from_dict({"nu": 0})


def test_storn_sparsifies_both_nets_and_keeps_rho():
    """STORN (Tables 13, 14) passes ν and ρ to the recognition and generating nets alike; the
    generating net's input is the 20 data columns and the 3 latent ones (fan-in 23)."""
    from trainables import storn

    config = storn.Config(hidden_units=30, recognition_units=25, latent_units=3, nu=4, rho=4.4, bidirectional=True)
    model = storn.Storn(20, config)
    model.initialise(config, torch.Generator().manual_seed(9))
    nets = [model.recognition.forward_net, model.recognition.backward_net, model.generating]
    for net in nets:
        for name, w in weights(net).items():
            assert (w != 0).sum(1).eq(4).all(), name
        radius = torch.linalg.eigvals(net.core.weight_hh_l0.detach().double()).abs().max().item()
        assert radius == pytest.approx(4.4, abs=1e-6)
    assert model.generating.core.weight_ih_l0.shape == (30, 23)
