"""Property: any byte string or YAML document given as a space file is a valid space or a SeqrepError,
never another exception (a traceback for the user)."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqrep import spaces
from seqrep.errors import SeqrepError

SETTINGS = settings(max_examples=300, deadline=None, database=None,  # no .hypothesis/ folder in the checkout
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)),
    max_leaves=12)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(), st.sampled_from([0, 1, 1e-308, 1e308, -0.0]))
distributions = st.one_of(
    st.builds(lambda k, a: {k: a}, st.sampled_from(spaces.KINDS), st.lists(numbers, max_size=4)),
    st.builds(lambda k, a: {k: a}, st.sampled_from(["choice", "grid"]), st.lists(scalars, max_size=4)),
    values)
# near-valid documents reach the deep checks; any field may instead hold anything at all
FIELDS = {
    "name": st.sampled_from(["fuzz", "other"]),
    "method": st.sampled_from(["mlp", "mdn", "nope", "../x"]),
    "source": st.text(max_size=10),
    "datasets": st.one_of(st.just(["toy"]), st.lists(st.sampled_from(["toy", "ucr-*", "[", "nope"]), max_size=3)),
    "metric": st.sampled_from(["valid_nll", "nll", "valid_"]),
    "mode": st.sampled_from(["min", "max", "up"]),
    "trials": numbers,
    "max_epochs": numbers,
    "notes": st.text(max_size=10),
    "fixed": st.dictionaries(st.sampled_from(["hidden_units", "step_rate", "batch_size", "transfer", "x"]),
                             values, max_size=3),
    "space": st.dictionaries(st.sampled_from(["hidden_units", "step_rate", "decay", "hidden_layers", "y"]),
                             distributions, max_size=3),
}
documents = st.fixed_dictionaries({}, optional={k: st.one_of(v, values) for k, v in FIELDS.items()})


def _valid_or_seqrep_error(path, check_config: bool) -> None:
    try:
        space = spaces.load(path, check_config=check_config)
    except SeqrepError as err:
        assert "\n" not in str(err).strip()  # one line for the user
        return
    json.dumps(space.to_json())  # a valid space is shown as JSON by `seqrep spaces NAME --json`
    spaces.format_space(space)


@SETTINGS
@given(raw=st.binary(max_size=200))
@example(raw=b"\xff\xfe")
@example(raw=b"a: \x00")
@example(raw=b"[" * 5000)
@example(raw=b"")
@example(raw=b"\x00")
@example(raw=b"?")  # {None: None}
@example(raw=b"1: a\nb: c\n")
@example(raw=b"name: fuzz\nmethod: mlp\nsource: s\ndatasets: [toy]\nmetric: valid_nll\nmode: min\nmax_epochs: 1\n"
              b"fixed: {hidden_units: 2020-01-01}\nspace: {}\n")
def test_any_byte_string_is_a_space_or_a_seqrep_error(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    _valid_or_seqrep_error(path, check_config=False)


@SETTINGS
@given(document=documents, check_config=st.booleans())
@example(document={"name": "fuzz", "method": "mlp", "source": "s", "datasets": ["toy"], "metric": "valid_nll",
                   "mode": "min", "max_epochs": 1, "space": {"step_rate": {"quniform": [0, 1e308, 1e-308]}}},
         check_config=False)
def test_any_yaml_document_is_a_space_or_a_seqrep_error(tmp_path, document, check_config):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    _valid_or_seqrep_error(path, check_config)


@SETTINGS
@given(document=documents)
def test_any_loaded_value_is_a_space_or_a_seqrep_error(tmp_path, document):
    try:
        spaces.parse(document, tmp_path / "fuzz.yaml", check_config=True)
    except SeqrepError:
        pass
