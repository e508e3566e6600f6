"""Start the whole suite on one machine, for development and tests.

``prim-dev`` (used by ``make run``) starts a MongoDB wire-protocol server
(the ``secantusd-py`` command, a development stand-in run as a separate
process), ``redis-server`` when installed, then auth, presence, router and
two edge nodes, each as its own process with ``PRIM_*`` settings. Ctrl-C or
SIGTERM stops every child. Tests use :class:`Cluster` the same way on free
ports.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path


# Ports are picked below Linux's ephemeral range (32768-60999 by default), so
# the outgoing connections of other processes cannot take one between the
# pick and the child's bind.
_PORT_RANGE = (20000, 32000)


# Ports this process has handed out. A cluster picks all its ports before it
# starts anything, so a port must not come back while its owner has not bound it.
_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now and no earlier call returned."""
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found in {_PORT_RANGE}")


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _bin(name: str) -> str:
    """Find a console script next to the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the process's log, or "" without a log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open(errors="replace") as log:
            return "".join(collections.deque(log, maxlen=lines)).rstrip("\n")


def spawn(
    name: str,
    args: list[str],
    port: int,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
) -> Process:
    stdout = stderr = None
    log_path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        stderr = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        stdout = stderr
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        # Ctrl-C reaches prim-dev only, which then stops the children in order.
        start_new_session=True,
    )
    process = Process(name, proc, port, log_path)
    if wait:
        try:
            wait_port(port, proc)
        except Exception as exc:
            process.stop(signal.SIGKILL)
            raise _with_log(exc, process) from exc
    return process


def _with_log(exc: Exception, process: Process) -> Exception:
    """Return ``exc`` with the end of ``process``'s log added, or ``exc`` itself without a log."""
    tail = process.log_tail()
    if not tail:
        return exc
    return RuntimeError(f"{exc}\nlast lines of {process.log_path}:\n{tail}")


def start_mongo(port: int, data_dir: Path | None, log_dir: Path | None = None) -> Process:
    storage = str(data_dir) if data_dir else ":memory:"
    if data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)
    args = [_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage]
    return spawn("mongo", args, port, log_dir=log_dir)


def start_redis(port: int, data_dir: Path | None, log_dir: Path | None = None) -> Process:
    args = [
        shutil.which("redis-server") or "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
    ]
    if data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--dir", str(data_dir)]
    return spawn("redis", args, port, log_dir=log_dir)


@dataclass
class Cluster:
    """The suite's processes and their addresses."""

    admin_token: str
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    data_dir: Path | None = None
    log_dir: Path | None = None
    edge_http_ports: list[int] = field(default_factory=lambda: [free_port(), free_port()])
    extra_env: dict[str, str] = field(default_factory=dict)
    mongo_port: int = field(default_factory=free_port)
    redis_port: int | None = field(default_factory=free_port)
    auth_port: int = field(default_factory=free_port)
    presence_port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)
    edge_grpc_ports: dict[str, int] = field(default_factory=dict)
    # PRIM_METRICS_PORT of auth, presence and router. A service not listed serves no metrics.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0" if self.redis_port else "memory://"

    def env(self) -> dict[str, str]:
        return {
            "PRIM_SERVICE_TOKEN": self.service_token,
            "PRIM_ADMIN_TOKEN": self.admin_token,
            "PRIM_MONGO_URL": self.mongo_url,
            "PRIM_MONGO_DB": "prim",
            "PRIM_REDIS_URL": self.redis_url,
            "PRIM_PRESENCE_REDIS_URL": self.redis_url,
            "PRIM_AUTH_ADDR": f"127.0.0.1:{self.auth_port}",
            "PRIM_PRESENCE_ADDR": f"127.0.0.1:{self.presence_port}",
            "PRIM_ROUTER_ADDR": f"127.0.0.1:{self.router_port}",
            **self.extra_env,
        }

    def start_stores(self) -> None:
        sub = (lambda name: self.data_dir / name) if self.data_dir else (lambda name: None)
        self.processes["mongo"] = start_mongo(self.mongo_port, sub("mongo"), self.log_dir)
        if self.redis_port:
            self.processes["redis"] = start_redis(self.redis_port, sub("redis"), self.log_dir)

    def start_service(self, name: str, port: int, env: Mapping[str, str] | None = None) -> Process:
        listen = {"PRIM_LISTEN": f"127.0.0.1:{port}"}
        if name in self.metrics_ports:
            listen["PRIM_METRICS_PORT"] = str(self.metrics_ports[name])
        process = spawn(
            name, [_bin(f"prim-{name}")], port, {**self.env(), **listen, **(env or {})}, self.log_dir
        )
        self.processes[name] = process
        return process

    def start_edge(self, index: int, http_port: int | None = None, grpc_port: int | None = None) -> Process:
        name = f"edge{index + 1}"
        http_port = http_port or self.edge_http_ports[index]
        grpc_port = grpc_port or self.edge_grpc_ports.get(name) or free_port()
        self.edge_grpc_ports[name] = grpc_port
        process = self.spawn_edge(name, http_port, grpc_port)
        self.processes[name] = process
        return process

    def spawn_edge(
        self,
        name: str,
        http_port: int,
        grpc_port: int,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> Process:
        """Start an edge node on the cluster's services and wait for both its ports.

        The process is not added to the cluster, so ``stop()`` leaves it to the caller.
        """
        edge_env = {
            **self.env(),
            "PRIM_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "PRIM_LISTEN": f"127.0.0.1:{grpc_port}",
            "PRIM_NODE_ID": name,
            **(env or {}),
        }
        process = spawn(name, [_bin("prim-edge")], http_port, edge_env, log_dir or self.log_dir)
        try:
            wait_port(grpc_port, process.proc)
        except Exception as exc:
            # The edge's HTTP port is open, so it is running. Kill it so that it
            # does not outlive the failed start.
            process.stop(signal.SIGKILL)
            raise _with_log(exc, process) from exc
        return process

    def start(self) -> None:
        self.start_stores()
        self.start_service("auth", self.auth_port)
        self.start_service("presence", self.presence_port)
        self.start_service("router", self.router_port)
        for index in range(len(self.edge_http_ports)):
            self.start_edge(index)

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        """Start the cluster for a ``with`` block and stop it after.

        It also stops the cluster when the start fails halfway.
        """
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def exited(self) -> list[Process]:
        """Return the cluster's processes that have ended, from a crash or a stop of one of them."""
        return [process for process in self.processes.values() if process.proc.poll() is not None]

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()

    def addresses(self) -> list[tuple[str, str]]:
        rows = [
            ("mongo", f"127.0.0.1:{self.mongo_port}"),
            ("redis", f"127.0.0.1:{self.redis_port}" if self.redis_port else "in-memory presence"),
            ("auth (gRPC)", f"127.0.0.1:{self.auth_port}"),
            ("presence (gRPC)", f"127.0.0.1:{self.presence_port}"),
            ("router (gRPC)", f"127.0.0.1:{self.router_port}"),
        ]
        for name, port in self.metrics_ports.items():
            rows.append((f"{name} (metrics)", f"http://127.0.0.1:{port}/metrics"))
        for index, http_port in enumerate(self.edge_http_ports):
            name = f"edge{index + 1}"
            rows.append((f"{name} (HTTP, WebSocket /acc)", f"127.0.0.1:{http_port}"))
            rows.append((f"{name} (gRPC)", f"127.0.0.1:{self.edge_grpc_ports[name]}"))
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="prim-dev",
        description="Start auth, presence, router and two edge nodes with local MongoDB and Redis.",
    )
    parser.add_argument("--data-dir", default="var/dev", help="folder for data and logs (default var/dev)")
    parser.add_argument("--edge-ports", default="8089,8090", help="HTTP ports of the edge nodes")
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir).resolve()
    admin_token = os.environ.get("PRIM_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    generated = "PRIM_ADMIN_TOKEN" not in os.environ
    service_token = os.environ.get("PRIM_SERVICE_TOKEN") or secrets.token_urlsafe(24)
    redis_port: int | None = 6390
    if not shutil.which("redis-server"):
        redis_port = None
        print("redis-server is not installed: presence runs in memory, valid for one presence replica")
    cluster = Cluster(
        admin_token=admin_token,
        service_token=service_token,
        data_dir=data_dir,
        log_dir=data_dir / "logs",
        edge_http_ports=[int(port) for port in args.edge_ports.split(",")],
        mongo_port=27027,
        redis_port=redis_port,
        # Below the ephemeral port range, where outgoing connections cannot hold them.
        auth_port=7051,
        presence_port=7052,
        router_port=7053,
        edge_grpc_ports={"edge1": 7061, "edge2": 7062},
        metrics_ports={"auth": 9101, "presence": 9102, "router": 9103},
    )
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        print("prim is up:")
        for name, address in cluster.addresses():
            print(f"  {name:<30} {address}")
        print(f"  logs: {cluster.log_dir}")
        if generated:
            print(f"operator token (generated; set PRIM_ADMIN_TOKEN to choose one): {admin_token}")
        # Printed every time: grpcurl needs it, and it is local to this machine.
        print(f"service token (PRIM_SERVICE_TOKEN, for grpcurl): {service_token}")
        print("Ctrl-C stops everything.", flush=True)
        while not stop:
            for name, process in cluster.processes.items():
                if process.proc.poll() is not None:
                    print(f"{name} exited with {process.proc.returncode}; see {process.log_path}")
                    stop = True
                    break
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        cluster.stop()
        print("stopped")


if __name__ == "__main__":
    main()
