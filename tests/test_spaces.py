"""Search-space files: parsing, every validation error, and the Ray Tune / Optuna conversions."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import optuna
import pytest

from seqrep import data as datasets
from seqrep import methods, searchers, spaces
from seqrep.errors import SeqrepError
from seqrep.spaces import SpaceError

BASE = """\
name: {name}
method: mlp
source: "Table 7, Section 2.6.3"
datasets: [toy]
metric: valid_nll
mode: min
trials: 4
max_epochs: 10
fixed: {{momentum: 0.0}}
space:
  hidden_layers: {{choice: [1, 2, 3]}}
  step_rate: {{loguniform: [1.0e-4, 0.1]}}
  hidden_units: {{randint: [200, 600]}}
  decay: {{quniform: [0.1, 0.9, 0.1]}}
  transfer: {{choice: [sigmoid, rectifier]}}
"""


def write(tmp_path, text, name="s"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path, text, name="s") -> str:
    path = write(tmp_path, text, name)
    with pytest.raises(SpaceError) as info:
        spaces.load(path)
    return str(info.value).replace(str(path), "FILE")


def test_loads_every_field(tmp_path):
    space = spaces.load(write(tmp_path, BASE.format(name="s")))
    assert space.method == "mlp" and space.datasets == ("toy",) and space.trials == 4
    assert space.fixed == {"momentum": 0.0}
    assert space.space["hidden_units"].to_json() == {"type": "randint", "low": 200, "high": 600, "inclusive": True}
    assert space.space["decay"].to_json() == {"type": "quniform", "low": 0.1, "high": 0.9, "q": 0.1}
    assert space.space["hidden_layers"].to_json() == {"type": "choice", "values": [1, 2, 3]}


def test_repository_spaces_all_load():
    good, bad = spaces.list_spaces()
    assert bad == []
    names = {s.name for s in good}
    assert {"table7-nn-toy", "table7-dn-toy"} <= names
    nn = spaces.load("table7-nn-toy")
    assert nn.space["batch_size"].args == (10, 25, 50)
    assert nn.space["hidden_units"].args == (10, 25, 50, 100)
    assert nn.space["hidden_layers"].args == (1, 2, 3)
    assert nn.max_epochs == 5000


@pytest.mark.parametrize(
    "edit, message",
    [
        (("trials: 4", "trials: 4\ncolour: red"),
         "FILE: unknown field(s) colour; allowed: name, method, source, datasets, metric, mode, trials, "
         "max_epochs, notes, fixed, space"),
        (("{loguniform: [1.0e-4, 0.1]}", "{normal: [0, 1]}"),
         "FILE: space.step_rate: unknown distribution 'normal'; allowed: choice, uniform, loguniform, randint, quniform, "
         "grid"),
        (("{loguniform: [1.0e-4, 0.1]}", "{uniform: [0.5, 0.1]}"),
         "FILE: space.step_rate: low <= high must hold, but got low=0.5, high=0.1"),
        (("{loguniform: [1.0e-4, 0.1]}", "{loguniform: [0.0, 0.1]}"),
         "FILE: space.step_rate: loguniform needs low > 0, but got low=0.0"),
        (("fixed: {momentum: 0.0}", "fixed: {momentum: 0.0, step_rate: 0.01}"),
         "FILE: step_rate both fixed and searched; keep each key in one of fixed or space"),
        (("method: mlp", "method: lstm9"),
         f"FILE: method: unknown method 'lstm9'; available: {', '.join(methods.available())}"),
        (("randint: [200, 600]", "randint: [200.5, 600]"),
         "FILE: space.hidden_units: randint takes integer bounds, got [200.5, 600]"),
        (("quniform: [0.1, 0.9, 0.1]", "quniform: [0.1, 0.95, 0.1]"),
         "FILE: space.decay: quniform needs high to be a multiple of q, but got high=0.95, q=0.1"),
        (("{choice: [1, 2, 3]}", "{choice: []}"), "FILE: space.hidden_layers: choice needs at least one value"),
        (("hidden_layers:", "hidden_layerz:"),
         "FILE: space.hidden_layerz: not a config key of method mlp; allowed: hidden_layers, hidden_units, "
         "transfer, step_rate, decay, momentum, batch_size"),
        (("{choice: [sigmoid, rectifier]}", "{choice: [sigmoid, tanh]}"),
         "FILE: space.transfer: got 'tanh', allowed: 'sigmoid', 'rectifier'"),
        (("datasets: [toy]", "datasets: [toy, moon]"),
         f"FILE: datasets: unknown data set 'moon'; available: {', '.join(datasets.names())}"),
        (("metric: valid_nll", "metric: test_nll"),
         "FILE: metric must be a validation metric named valid_<quantity>, got 'test_nll'"),
        (("mode: min", "mode: lowest"), "FILE: mode must be min or max, got 'lowest'"),
        (("trials: 4", "trials: 0"), "FILE: trials must be a positive integer or null, got 0"),
        (("max_epochs: 10", "max_epochs: ten"), "FILE: max_epochs must be a positive integer, got 'ten'"),
        (("name: s", "name: other"), "FILE: name must equal the file name 's', got 'other'"),
        (("fixed: {momentum: 0.0}", "fixed: {momentum: fast}"), "FILE: fixed.momentum: expected a number, got 'fast'"),
        (("randint: [200, 600]", "randint: [0, 600]"),
         "FILE: space.hidden_units: trainables.mlp.Config: hidden_units >= 1 must hold, but got hidden_units=0"),
    ],
)
def test_validation_errors_name_file_key_and_rule(tmp_path, edit, message):
    old, new = edit
    text = BASE.format(name="s")
    assert old in text
    assert error_of(tmp_path, text.replace(old, new, 1)) == message


def test_missing_fields_and_bad_yaml(tmp_path):
    assert error_of(tmp_path, "name: s\nmethod: mlp\n") == (
        "FILE: missing field(s) source, datasets, metric, mode, max_epochs, space")
    assert error_of(tmp_path, "name: s\nspace: {a: [1,\n") .startswith("FILE: line ")
    assert error_of(tmp_path, "- 1\n- 2\n") == (
        "FILE: expected a mapping of fields (name, method, source, datasets, metric, mode, trials, max_epochs, "
        "notes, fixed, space), got list")


def test_unknown_space_name_lists_the_available_ones():
    with pytest.raises(SpaceError, match=r"unknown search space 'table99'; available: .*table7-nn-toy"):
        spaces.load("table99")


def test_randint_bounds_are_inclusive_in_ray_tune(tmp_path):
    space = spaces.load(write(tmp_path, BASE.format(name="s")))
    domain = searchers.to_tune(space)["hidden_units"]
    draws = np.asarray(domain.sample(size=20000, random_state=np.random.default_rng(0)))
    # 401 values, 20000 draws: P(a bound is never hit) = (400/401)^20000 < 1e-21
    assert draws.min() == 200 and draws.max() == 600


def test_tune_and_optuna_agree_on_supports(tmp_path):
    space = spaces.load(write(tmp_path, BASE.format(name="s")))
    tune_space = searchers.to_tune(space)
    optuna_space = searchers.to_optuna(space)
    assert set(optuna_space) == set(space.space) and tune_space["momentum"] == 0.0
    rng = np.random.default_rng(1)
    sampler = optuna.samplers.RandomSampler(seed=1)
    study = optuna.create_study(sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_draws = {k: [] for k in optuna_space}
    for _ in range(3000):
        trial = study.ask(optuna_space)
        for k in optuna_space:
            optuna_draws[k].append(trial.params[k])
        study.tell(trial, 0.0)
    for key in ("hidden_layers", "transfer"):
        tune_values = set(tune_space[key].sample(size=3000, random_state=rng))
        assert tune_values == set(optuna_draws[key]) == set(space.space[key].args)
    tune_units = np.asarray(tune_space["hidden_units"].sample(size=20000, random_state=rng))
    assert (tune_units.min(), tune_units.max()) == (200, 600)
    assert (optuna_space["hidden_units"].low, optuna_space["hidden_units"].high) == (200, 600)
    tune_rates = np.asarray(tune_space["step_rate"].sample(size=3000, random_state=rng))
    for draws in (tune_rates, np.asarray(optuna_draws["step_rate"])):
        assert 1e-4 <= draws.min() and draws.max() <= 0.1
        # log-uniform: the median of log10 is the midpoint -2.5 (3000 draws: sd of the median ~0.03)
        assert abs(np.median(np.log10(draws)) + 2.5) < 0.1
    grid = {round(0.1 * i, 10) for i in range(1, 10)}
    tune_decay = {round(v, 10) for v in tune_space["decay"].sample(size=3000, random_state=rng)}
    optuna_decay = {round(v, 10) for v in optuna_draws["decay"]}
    assert tune_decay <= grid and optuna_decay <= grid
    # the end points have half the mass in Ray's rounding; 3000 draws still reach all 9 values
    assert tune_decay == grid and optuna_decay == grid


def _configs(space, seed, n=6):
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.experiment import Experiment

    def run(config):  # pragma: no cover - never called
        pass

    generator = BasicVariantGenerator(random_state=seed)
    generator.add_configurations([Experiment("x", run, config=searchers.to_tune(space), num_samples=n)])
    return [generator.next_trial().config for _ in range(n)]


def test_same_seed_same_configs_other_seed_other_configs(tmp_path):
    space = spaces.load(write(tmp_path, BASE.format(name="s")))
    first, again, other = _configs(space, 7), _configs(space, 7), _configs(space, 8)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert [c["step_rate"] for c in first] != [c["step_rate"] for c in other]


def test_json_and_readable_forms(tmp_path):
    space = spaces.load(write(tmp_path, BASE.format(name="s")))
    resolved = json.loads(spaces.resolved_json(space))
    assert resolved["fixed"] == {"momentum": 0.0}
    assert resolved["space"]["step_rate"] == {"type": "loguniform", "low": 0.0001, "high": 0.1}
    text = spaces.format_space(space)
    assert "randint 200 … 600 (inclusive)" in text
    assert "choice sigmoid, rectifier" in text
    assert textwrap.dedent(text).splitlines()[0] == "s  (s.yaml)"


def test_a_dataset_pattern_admits_any_ucr_folder():
    space = spaces.load("table10-sf")
    space.check_dataset("ucr-gunpoint")  # any folder in the UCR layout, not only the thesis's sets
    with pytest.raises(SeqrepError) as err:
        space.check_dataset("jsb")
    assert str(err.value) == (
        "space table10-sf applies to data set(s) ucr-twopatterns, ucr-beef, ucr-cbf, ucr-lightning2, "
        "ucr-lightning7, ucr-ecg200, ucr-*, not 'jsb'; pass --dataset with one of those")


THESIS_NU_SPACES = ["table1-fd-rnn", "table3-srnn", "table4-srnn", "table4-lstm", "table4-fd-rnn", "table4-fd-lstm",
                    "table13-storn", "table14-storn"]


@pytest.mark.parametrize("name", THESIS_NU_SPACES)
def test_thesis_nu_is_sparse_initialisation_and_gradient_renormalisation_is_off(name):
    """Table 1's / Table 4's ν is the sparse-initialisation count (`nu`), "no" is null; gradient
    renormalisation (τ, not a row of these tables) is fixed off."""
    space = spaces.load(name)
    assert "grad_norm" not in space.space and space.fixed["grad_norm"] is None
    nu = space.space["nu"]
    if name.startswith("table4-"):
        assert (nu.kind, nu.args) == ("randint", (14, 200))
    else:
        assert (nu.kind, nu.args) == ("choice", (15, 25, 35, 50, None))
    assert "sparse initialisation" in space.notes


def test_table4_lstm_spaces_run_the_thesis_cell_and_storn_rho_is_scaled_to_the_sigmoid():
    for name in ("table4-lstm", "table4-fd-lstm"):
        assert spaces.load(name).fixed["cell"] == "lstm"  # the thesis's cell; torch's is "torch-lstm"
    for name in ("table13-storn", "table14-storn"):
        space = spaces.load(name)
        assert space.fixed["cell"] == "sigmoid"
        assert space.space["rho"].args == tuple(4 * r for r in (1.0, 1.05, 1.1, 1.2))  # 1/psi = 4 for sigma


def test_table7_toy_spaces_use_the_standard_deviation_reading_and_admit_the_printed_one():
    for method in ("nn", "dn", "fd", "ivn", "fawn-vb", "fawn-ropd"):
        space = spaces.load(f"table7-{method}-toy")
        assert space.datasets == ("toy", "toy-printed")
        assert "standard-deviation reading" in space.notes
