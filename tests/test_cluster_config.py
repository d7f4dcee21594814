"""cluster.yaml: valid under Ray's own launcher schema, and the properties the cluster relies on.

How it is validated: `ray up` runs `prepare_config` (merges the provider's defaults.yaml under the
file, prepends `setup_commands` to the head and worker lists, fills per-type min/max workers), then
the AWS provider's `fillout_available_node_types_resources` (EC2 DescribeInstanceTypes), then
`validate_config` (the JSON schema ray/autoscaler/ray-schema.json plus a few cross-checks), then
`bootstrap_config` (IAM role, key pair, subnets, security group). For AWS, `prepare_config` only
reads ray/autoscaler/aws/defaults.yaml, so `prepare_config` + `validate_config` is `ray up`'s own
check without the two steps that call AWS; the resource autodetection is moot because the file
states every node type's resources. The tests forbid sockets while they validate, to prove it.
`validate_config` alone rejects any hand-written file: after the schema it demands
`cluster_synced_files`, which only the defaults merged in by `prepare_config` supply.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def raw(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cluster config validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def prepared(config: dict) -> dict:
    return prepare_config(copy.deepcopy(config))


@pytest.fixture(scope="module")
def config(raw) -> dict:
    """The file as `ray up` sees it after prepare_config (defaults merged, setup lists merged)."""
    return prepared(raw)


def ray_start_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def test_file_passes_rays_schema_offline(raw, no_network):
    before = copy.deepcopy(raw)
    validate_config(prepared(raw))
    assert raw == before  # prepare_config worked on a copy


def test_validate_config_alone_rejects_a_hand_written_file(raw, no_network):
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(copy.deepcopy(raw))


def _global_max_workers_many(c):
    c["max_workers"] = "many"


def _worker_max_workers_many(c):
    c["available_node_types"]["gpu_worker"]["max_workers"] = "many"


def _worker_without_resources(c):
    del c["available_node_types"]["gpu_worker"]["resources"]


def _unknown_top_level_key(c):
    c["max_worker"] = 4


@pytest.mark.parametrize("break_it", [_global_max_workers_many, _worker_max_workers_many,
                                      _worker_without_resources, _unknown_top_level_key])
def test_validation_rejects_a_broken_copy(raw, no_network, break_it):
    broken = copy.deepcopy(raw)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepared(broken))


def test_cpu_head_and_gpu_worker_types(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert config["provider"]["type"] == "aws"
    assert head["resources"].get("CPU", 0) >= 1 and not head["resources"].get("GPU")
    gpu_types = {name: t for name, t in types.items()
                 if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker node type"
    for t in gpu_types.values():
        assert t["resources"].get("CPU", 0) >= 1
        assert isinstance(t["min_workers"], int) and isinstance(t["max_workers"], int)
        assert 0 <= t["min_workers"] <= t["max_workers"] and t["max_workers"] >= 1
        assert t["max_workers"] <= config["max_workers"]


def test_setup_installs_pinned_torch_then_the_project(config):
    assert config["file_mounts"]["~/seqrep"] == "."
    common = " ".join(config["setup_commands"])
    assert '"ray[default,tune]==2.60.0"' in common and '"mlflow[auth]==3.17.2"' in common
    assert "/mnt/efs" in common  # the shared --storage every node sees

    def index(commands, pattern):
        hits = [i for i, c in enumerate(commands) if re.search(pattern, c)]
        assert hits, f"no command matches {pattern!r}"
        return hits[0]

    head, worker = config["head_setup_commands"], config["worker_setup_commands"]
    torch_head = index(head, r"pip install torch==2\.13\.0 .*download\.pytorch\.org/whl/cpu")
    assert torch_head < index(head, r"pip install -e ~/seqrep")
    torch_worker = index(worker, r"pip install torch==2\.13\.0")
    assert "whl/cpu" not in worker[torch_worker]  # PyPI's default Linux wheel: the CUDA build
    assert torch_worker < index(worker, r"pip install -e ~/seqrep")


def test_mlflow_server_on_the_head_only(config):
    head = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert len(head) == 1
    cmd = head[0]
    for flag in ("--serve-artifacts", "--artifacts-destination", "--app-name basic-auth",
                 "--backend-store-uri sqlite:///", "nohup"):
        assert flag in cmd
    assert re.search(r">\s*\S*server\.log\s+2>&1", cmd), "no log file"
    host = re.search(r"--host[= ](\S+)", cmd).group(1)
    assert host not in ("0.0.0.0", "::", "[::]", "localhost", "127.0.0.1")
    assert not any("mlflow server" in c for c in config["worker_start_ray_commands"])
    everything = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not any("0.0.0.0" in c for c in everything)


def test_dashboard_bound_to_loopback(config):
    (head_start,) = [c for c in ray_start_commands(config["head_start_ray_commands"]) if "--head" in c]
    assert re.search(r"--dashboard-host[= ](\S+)", head_start).group(1) == "127.0.0.1"


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_token_auth_on_every_ray_start(config, key):
    starts = ray_start_commands(config[key])
    assert starts
    for cmd in starts:
        assert "RAY_AUTH_MODE=token" in cmd[:cmd.index("ray start")]
        assert "RAY_AUTH_TOKEN=" not in cmd  # the token comes from the node, not from this file


SECRET_PATTERNS = [
    # KEY=value where the key names a secret and the value is a literal (not $VAR or <placeholder>)
    r"(?i)\b\w*(password|passwd|secret|token|api_key|access_key)\w*\s*=\s*[\"']?(?![$<\"'\s])\S",
    r"(?i)(password|passwd|secret)\s*:\s*[\"']?(?![$<\"'\s])\S",  # a YAML key holding one
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"(?i)aws_secret_access_key|aws_session_token",
    r"\b[0-9a-fA-F]{32,}\b",  # a hex token (Ray's own are 64 hex digits)
    r"[A-Za-z0-9+/=]{40,}",  # a long base64 blob (AWS secret keys are 40 of these)
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
]


@pytest.mark.parametrize("pattern", SECRET_PATTERNS)
def test_no_secret_literal_in_the_file(text, pattern):
    hits = [line.strip() for line in text.splitlines() if re.search(pattern, line)]
    assert not hits, f"secret-looking text in cluster.yaml: {hits}"


def test_secret_files_come_from_outside_the_checkout(raw):
    for remote, local in raw["file_mounts"].items():
        if remote == "~/seqrep":
            continue
        resolved = (ROOT / local).resolve()
        assert ROOT not in resolved.parents and resolved != ROOT, (remote, local)
