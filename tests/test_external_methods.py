"""Methods from outside the repository (README, "Add your own method"): the example package in
examples/linreg, installed, is found by its entry-point name and by its module path, validated like a
built-in method, and searched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from seqrep import methods, spaces
from seqrep.errors import SeqrepError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "linreg"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package pip-installed into a folder of its own (no network: no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


@pytest.fixture
def installed(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    return site


def bad_space(tmp_path: Path, method: str, extra: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nmethod: {method}\nsource: x\ndatasets: [toy]\nmetric: valid_nll\nmode: min\n"
                    f"max_epochs: 2\n{extra}\n")
    return path


def test_the_example_is_found_by_entry_point_and_by_module_path(installed):
    assert "linreg" in methods.registered()
    assert methods.resolve("linreg") is methods.resolve("seqrep_linreg.method")
    for name in ("linreg-toy", "linreg-module-toy"):
        assert spaces.load(EXAMPLE / f"{name}.yaml").space["batch_size"].args == (10, 25)


@pytest.mark.parametrize("method", ["linreg", "seqrep_linreg.method", "mlp"])
@pytest.mark.parametrize("extra, message", [
    ("fixed: {hidden: 5}\nspace: {}", "{path}: fixed.hidden: not a config key of method {method}; allowed: "),
    ("fixed: {batch_size: ten}\nspace: {}", "{path}: fixed.batch_size: expected an integer, got 'ten'"),
    ("fixed: {step_rate: -1.0}\nspace: {}", "{path}: fixed.step_rate: "),
])
def test_an_outside_method_is_validated_like_a_built_in_one(installed, tmp_path, method, extra, message):
    path = bad_space(tmp_path, method, extra)
    with pytest.raises(SeqrepError) as info:
        spaces.load(path)
    assert str(info.value).startswith(message.format(path=path, method=method))


def test_an_unknown_module_path_names_what_a_method_can_be(tmp_path):
    with pytest.raises(SeqrepError, match=r"method: unknown method 'nopkg\.nomethod': no module of that name can be "
                                          r"imported; a method is one of ce, .* an importable module path such as "
                                          r"mypkg\.mymethod"):
        spaces.load(bad_space(tmp_path, "nopkg.nomethod", "space: {}"))


@pytest.mark.integration
@pytest.mark.parametrize("space", ["linreg-toy", "linreg-module-toy"])
def test_a_two_trial_study_of_the_installed_example(site, tmp_path, space):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "seqrep.cli", "search", str(EXAMPLE / f"{space}.yaml"), "--dataset",
                           "toy", "--storage", str(tmp_path / "s"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "s" / f"{space}-toy" / "trials.parquet")
    assert len(frame) == 2 and set(frame["status"]) == {"completed"} and frame["test_nll"].notna().all()
    assert set(frame["config.batch_size"]) <= {10, 25} and (frame["best_epoch"] >= 1).all()
