"""The measured systems: how each one starts, stops, and names its clients.

Every system has a "server 1" and a "server 2" (the relay has one process
for both) and the load generator protocol that speaks to it. It also makes
the credentials of each scenario: prim needs a token per user from
``getToken``, and the peers take a user name in the connect request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from prim.client import ApiError, TenantClient
from prim.devcluster import Cluster, Process, free_port, spawn, start_redis, wait_port

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"
TOKEN_REQUESTS_IN_FLIGHT = 8
# NOTE: getToken calls in flight on a busy 2-core machine can pass auth's 5 s
# gRPC deadline (reply 1004), so provisioning retries them.
TOKEN_ATTEMPTS = 5


class System:
    name = ""
    protocol = ""
    label = ""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir / self.name
        self.processes: list[Process] = []
        self.server_urls: list[str] = []

    @property
    def sender_url(self) -> str:
        return self.server_urls[0]

    @property
    def receiver_url(self) -> str:
        return self.server_urls[-1]

    def server1_pid(self) -> int:
        return self.processes[0].proc.pid

    def profile_pids(self) -> dict[str, int]:
        return {}

    def server_pids(self) -> list[int]:
        return [process.proc.pid for process in self.processes]

    def start(self, users: dict[str, list[str]]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def credential(self, user: str) -> dict:
        return {"user": user}

    def broadcast_settings(self) -> dict:
        return {}

    def drop_counters(self) -> dict[str, int]:
        return {}


class PrimSystem(System):
    """The whole prim suite from :class:`prim.devcluster.Cluster`, with default settings."""

    name = "prim"
    protocol = "prim"
    label = "prim"

    def __init__(self, log_dir: Path):
        super().__init__(log_dir)
        self.cluster: Cluster | None = None
        self.password = secrets.token_urlsafe(16)
        self.tokens: dict[str, str] = {}

    def start(self, users: dict[str, list[str]]) -> None:
        self.cluster = Cluster(admin_token=secrets.token_urlsafe(24), log_dir=self.log_dir)
        try:
            self.cluster.start()
        except Exception:
            self.cluster.stop()
            raise
        self.server_urls = [f"ws://127.0.0.1:{port}" for port in self.cluster.edge_http_ports]
        everyone = sorted({user for group in users.values() for user in group})
        asyncio.run(self._provision(everyone))

    async def _provision(self, users: list[str]) -> None:
        """Create the tenant and one token per user, TOKEN_REQUESTS_IN_FLIGHT at a time."""
        base = self.rest_url
        async with TenantClient(base, admin_token=self.cluster.admin_token) as operator:
            await operator.create_sys_client(TENANT, self.password)
        semaphore = asyncio.Semaphore(TOKEN_REQUESTS_IN_FLIGHT)
        async with TenantClient(base, TENANT, self.password, timeout=60.0) as tenant:
            # NOTE: one request first, so that auth's credential cache contains the
            # tenant password. Concurrent first requests each run the argon2id
            # check and, on 2 cores, pass the 5 s gRPC deadline.
            self.tokens[users[0]] = (await tenant.get_token(users[0])).token

            async def one(user: str) -> None:
                async with semaphore:
                    self.tokens[user] = await get_token_with_retries(tenant, user)

            await asyncio.gather(*(one(user) for user in users))

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.cluster.edge_http_ports[0]}"

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def server1_pid(self) -> int:
        return self.cluster.processes["edge1"].proc.pid

    def profile_pids(self) -> dict[str, int]:
        return {
            name: self.cluster.processes[name].proc.pid
            for name in ("edge1", "edge2", "router", "presence", "mongo")
        }

    def server_pids(self) -> list[int]:
        return [process.proc.pid for process in self.cluster.processes.values()]

    def credential(self, user: str) -> dict:
        return {"token": self.tokens[user]}

    def broadcast_settings(self) -> dict:
        return {
            "rest_url": self.rest_url,
            "account": TENANT,
            "password": self.password,
            "broadcast_from": "broadcaster",
        }


async def get_token_with_retries(tenant: TenantClient, user: str) -> str:
    """Call getToken, retrying a 1004 (auth unavailable) up to TOKEN_ATTEMPTS times."""
    for attempt in range(1, TOKEN_ATTEMPTS + 1):
        try:
            return (await tenant.get_token(user)).token
        except ApiError as exc:
            if exc.code != 1004 or attempt == TOKEN_ATTEMPTS:
                raise
            await asyncio.sleep(attempt)
    raise AssertionError("unreachable")


class PeerSystem(System):
    """Two server processes of one peer on a Redis that this system starts for itself."""

    module = ""
    servers = 2

    def start(self, users: dict[str, list[str]]) -> None:
        redis_port = free_port()
        self.redis = start_redis(redis_port, None, self.log_dir)
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            for index in range(self.servers):
                port = free_port()
                args = [sys.executable, "-m", self.module, "--port", str(port), *self.extra_args()]
                name = f"{self.name}{index + 1}"
                self.processes.append(
                    spawn(name, args, port, {"PYTHONPATH": str(ROOT)}, self.log_dir)
                )
                self.server_urls.append(f"ws://127.0.0.1:{port}")
        except Exception:
            self.stop()
            raise

    def extra_args(self) -> list[str]:
        return ["--redis-url", self.redis_url]

    def stop(self) -> None:
        super().stop()
        self.redis.stop()

    def stats_urls(self) -> list[str]:
        return [url.replace("ws://", "http://") + "/stats" for url in self.server_urls]

    def drop_counters(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for url in self.stats_urls():
            with urllib.request.urlopen(url, timeout=10) as response:
                counters = json.load(response)
            counters.pop("pid", None)
            total.update(counters)
        return dict(total)


class SocketIOSystem(PeerSystem):
    name = "socketio"
    protocol = "socketio"
    label = "python-socketio"
    module = "bench.peers.socketio_server"


class ChannelsSystem(PeerSystem):
    name = "channels"
    protocol = "channels"
    label = "Django Channels"
    module = "bench.peers.channels_app"


class RelaySystem(PeerSystem):
    """The ceiling: one relay process stands for both servers and needs no Redis."""

    name = "relay"
    protocol = "relay"
    label = "picows relay (ceiling)"
    module = "bench.peers.relay"
    servers = 1

    def start(self, users: dict[str, list[str]]) -> None:
        self.stats_port = free_port()
        port = free_port()
        args = [
            sys.executable,
            "-m",
            self.module,
            "--port",
            str(port),
            "--stats-port",
            str(self.stats_port),
        ]
        self.processes.append(spawn("relay", args, port, {"PYTHONPATH": str(ROOT)}, self.log_dir))
        self.server_urls = [f"ws://127.0.0.1:{port}"]
        wait_port(self.stats_port, self.processes[0].proc)

    def stop(self) -> None:
        System.stop(self)

    def stats_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.stats_port}/stats"]


SYSTEMS = {cls.name: cls for cls in (PrimSystem, SocketIOSystem, ChannelsSystem, RelaySystem)}
# Peers that prim's targets are compared with; the relay is the ceiling, not a target.
FRAMEWORK_PEERS = ("socketio", "channels")
