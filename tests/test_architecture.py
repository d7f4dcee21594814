"""The boundaries between the engine and the methods (pyproject's import-linter contracts), and
the commands that must not load Ray or torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from seqrep import methods

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's command, in this venv
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 8 kept, 0 broken." in result.stdout


def test_the_independence_contract_lists_every_method():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "independence")
    assert sorted(m.removeprefix("trainables.") for m in contract["modules"]) == methods.available()


def _long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_no_file_over_400_lines_and_no_function_over_60_in_the_engine_and_methods():
    files = sorted((ROOT / "platform").rglob("*.py")) + sorted((ROOT / "trainables").rglob("*.py"))
    long_files = [f"{f.relative_to(ROOT)} ({n} lines)" for f in files if (n := len(f.read_text().splitlines())) > 400]
    assert long_files == []
    assert [line for f in files for line in _long_functions(f, 60)] == []


@pytest.fixture
def finished_study(tmp_path):
    """A study folder as a finished search leaves it (two trials), without running one."""
    study = tmp_path / "s"
    record = {"name": "s", "space": "table7-nn-toy", "method": "mlp", "dataset": "toy", "seed": 0,
              "metric": "valid_nll", "mode": "min", "cpus_per_trial": 1.0, "gpus_per_trial": 0.0}
    (study / "ray" / "t1").mkdir(parents=True)
    (study / "ray" / "t2").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps(record))
    for trial, nll in (("t1", 1.5), ("t2", 2.5)):
        (study / "ray" / trial / "params.json").write_text(json.dumps({"hidden_units": 5}))
        final = {"epoch": 1, "valid_nll": nll, "test_nll": nll + 0.1, "best_epoch": 1, "seqrep_status": "completed",
                 "history": [{"epoch": 1, "train_loss": 1.0, "valid_nll": nll}]}
        (study / "ray" / trial / "result.json").write_text(json.dumps(final) + "\n")
    return study


def test_summarize_spaces_and_data_list_load_neither_ray_nor_torch(finished_study):
    code = (
        "import sys\n"
        "from seqrep import cli\n"
        f"assert cli.main(['summarize', {str(finished_study)!r}]) == 0\n"
        "assert cli.main(['spaces']) == 0\n"
        "assert cli.main(['spaces', 'table7-nn-toy']) == 0\n"
        "assert cli.main(['data', 'list']) == 0\n"
        "assert 'ray' not in sys.modules and 'torch' not in sys.modules, "
        "[m for m in ('ray', 'torch') if m in sys.modules]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout and "(2 trials)" in result.stdout
