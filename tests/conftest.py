"""Fixtures that start real servers on free ports: redis-server, the MongoDB
wire-protocol server and, for end-to-end tests, the whole prim suite."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from prim import devcluster

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Add the log tail of every suite process that has died to a failed test's report."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if not isinstance(value, devcluster.Cluster):
                continue
            for process in value.exited():
                try:
                    tail = process.log_tail()
                except OSError as exc:
                    tail = f"reading {process.log_path} failed: {exc}"
                title = f"{process.name} exited with {process.proc.returncode}"
                report.sections.append((title, tail))
    return report


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    port = devcluster.free_port()
    process = devcluster.start_mongo(port, None, tmp_path_factory.mktemp("mongo-logs"))
    yield f"mongodb://127.0.0.1:{port}/?directConnection=true"
    process.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: apt-get install -y redis-server")
    port = devcluster.free_port()
    process = devcluster.start_redis(port, None, tmp_path_factory.mktemp("redis-logs"))
    yield f"redis://127.0.0.1:{port}/0"
    process.stop()


@pytest.fixture
def db_name() -> str:
    """A fresh database name, so tests sharing one Mongo server stay apart."""
    return "t_" + secrets.token_hex(6)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The whole suite: Mongo, Redis, auth, presence, router and two edge nodes."""
    logs = tmp_path_factory.mktemp("cluster-logs")
    suite = devcluster.Cluster(admin_token=secrets.token_urlsafe(16), log_dir=logs)
    with suite.running():
        yield suite

