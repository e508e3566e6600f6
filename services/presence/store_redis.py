"""Redis presence store: the key layout and the Lua scripts are in ``redis_scripts``."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

import redis.asyncio
import redis.exceptions

from prim.errors import Unavailable
from prim.pb.common_pb2 import Location, User
from prim.pb.presence_pb2 import Node

from . import redis_scripts as scripts
from .store import SWEEP_BATCH, PresenceStore

# Connections written by one REFRESH script call. The calls of one Refresh share a pipeline.
REFRESH_CHUNK = 500
# Members taken from a node's index by one DRAIN_NODE script call.
DRAIN_BATCH = 500
# Sweep steps in one sweep() call, so one call cannot hold a connection for long.
MAX_SWEEP_STEPS = 100

# While the changes subscription is quiet, it pings Redis this often, and gives
# up after three intervals without any reply. A router's cache can serve an
# entry that changed meanwhile for that long, if its connection dies silently.
CHANGES_PING_SECONDS = 1.0

P = ParamSpec("P")
R = TypeVar("R")


def _unavailable_on_connection_error(
    method: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Raise Unavailable when Redis cannot be reached or does not reply in time."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc

    return wrapper


def _connect_call(user: User, policy: str, max_devices: int, ttl_seconds: int) -> dict:
    """Keys and arguments of the CONNECT script for one connection."""
    tenant = user.sys_account
    args = [
        tenant,
        user.user_id,
        user.app_platform,
        user.node_id,
        user.conn_id,
        user.login_time,
        ttl_seconds * 1000,
        user.SerializeToString(),
        policy,
        max_devices,
    ]
    return {"keys": [_order_key(tenant)], "args": args}


def _replaced(user: User, reply: list[bytes]) -> list[Location]:
    """Decode the connections that a CONNECT script reply lists as replaced."""
    return [
        Location(
            user_id=user.user_id,
            app_platform=reply[i].decode(),
            node_id=reply[i + 1].decode(),
            conn_id=reply[i + 2].decode(),
        )
        for i in range(0, len(reply), 3)
    ]


def _order_key(tenant: str) -> str:
    return f"prim:{{{tenant}}}:order"


def _meta_key(tenant: str) -> str:
    return f"prim:{{{tenant}}}:meta"


class RedisStore(PresenceStore):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        timeout_seconds: float,
        pool_wait_seconds: float,
    ):
        # A blocking pool makes a call wait up to pool_wait_seconds for a free connection
        # instead of failing at once when all max_connections are in use.
        self._pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
        )
        self._redis = redis.asyncio.Redis(connection_pool=self._pool)
        register = self._redis.register_script
        self._connect = register(scripts.CONNECT)
        self._disconnect = register(scripts.DISCONNECT)
        self._refresh = register(scripts.REFRESH)
        self._locate = register(scripts.LOCATE)
        self._list_connections = register(scripts.LIST_CONNECTIONS)
        self._node_map = register(scripts.NODE_MAP)
        self._register_node = register(scripts.REGISTER_NODE)
        self._refresh_node = register(scripts.REFRESH_NODE)
        self._list_nodes = register(scripts.LIST_NODES)
        self._drain_node = register(scripts.DRAIN_NODE)
        self._sweep = register(scripts.SWEEP)

    # Connections

    @_unavailable_on_connection_error
    async def connect(
        self, user: User, policy: str, max_devices: int, ttl_seconds: int
    ) -> list[Location]:
        reply = await self._connect(**_connect_call(user, policy, max_devices, ttl_seconds))
        return _replaced(user, reply)

    @_unavailable_on_connection_error
    async def connect_many(
        self, requests: Sequence[tuple[User, str, int, int]]
    ) -> list[list[Location] | Exception]:
        # One pipeline, one round trip: a connect storm sends hundreds of
        # logins per call. Each script runs atomically on its own.
        async with self._redis.pipeline(transaction=False) as pipe:
            for request in requests:
                await self._connect(**_connect_call(*request), client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        return [
            reply if isinstance(reply, Exception) else _replaced(user, reply)
            for (user, *_), reply in zip(requests, replies, strict=True)
        ]

    @_unavailable_on_connection_error
    async def disconnect(self, tenant: str, user_id: str, conn_id: str) -> bool:
        args = [tenant, user_id, conn_id]
        return bool(await self._disconnect(keys=[_meta_key(tenant)], args=args))

    @_unavailable_on_connection_error
    async def disconnect_many(
        self, requests: Sequence[tuple[str, str, str]]
    ) -> list[bool | Exception]:
        # One pipeline, as for connect_many: a closing storm removes hundreds at once.
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, user_id, conn_id in requests:
                args = [tenant, user_id, conn_id]
                await self._disconnect(keys=[_meta_key(tenant)], args=args, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, Exception) else bool(reply) for reply in replies]

    @_unavailable_on_connection_error
    async def refresh(self, node_id: str, users: Sequence[User], ttl_seconds: int) -> int:
        by_tenant: dict[str, list[User]] = {}
        for user in users:
            by_tenant.setdefault(user.sys_account, []).append(user)

        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, tenant_users in by_tenant.items():
                for start in range(0, len(tenant_users), REFRESH_CHUNK):
                    chunk = tenant_users[start : start + REFRESH_CHUNK]
                    args = self._refresh_args(tenant, node_id, ttl_seconds, chunk)
                    await self._refresh(keys=[_meta_key(tenant)], args=args, client=pipe)
            await self._refresh_node(keys=["prim:nodes"], args=[node_id], client=pipe)
            results = await pipe.execute()
        return sum(results[:-1])

    @staticmethod
    def _refresh_args(
        tenant: str, node_id: str, ttl_seconds: int, users: Sequence[User]
    ) -> list[str | int | bytes]:
        args: list[str | int | bytes] = [tenant, node_id, ttl_seconds * 1000]
        for user in users:
            args += [user.user_id, user.app_platform, user.conn_id, user.login_time]
            args.append(user.SerializeToString())
        return args

    async def locate(self, tenant: str, user_ids: Sequence[str]) -> list[Location]:
        return [location for location, _ in await self.locate_expiring(tenant, user_ids)]

    @_unavailable_on_connection_error
    async def locate_expiring(
        self, tenant: str, user_ids: Sequence[str]
    ) -> list[tuple[Location, float]]:
        """:meth:`locate`, with the seconds each connection has left unless refreshed."""
        unique_ids = list(dict.fromkeys(user_ids))
        if not unique_ids:
            return []
        reply = await self._locate(keys=[_order_key(tenant)], args=[tenant, *unique_ids])
        return [
            (
                Location(
                    user_id=reply[i].decode(),
                    app_platform=reply[i + 1].decode(),
                    node_id=reply[i + 2].decode(),
                    conn_id=reply[i + 3].decode(),
                ),
                int(reply[i + 4]) / 1000,
            )
            for i in range(0, len(reply), 5)
        ]

    async def follow_changes(
        self, on_subscribed: Callable[[], None], on_change: Callable[[str, str], None]
    ) -> None:
        """Report every change of a user's connections, until cancelled.

        Calls ``on_subscribed`` once the subscription is in place, then
        ``on_change(tenant, user_id)`` for each change the scripts publish.
        Raises Unavailable when the subscription breaks or Redis stops
        replying to its pings. Changes published until the caller subscribes
        again are lost, so it must forget whatever it learnt from them.
        """
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(scripts.CHANGES_CHANNEL)
            last_reply = pinged = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=CHANGES_PING_SECONDS)
                now = time.monotonic()
                if message is not None:
                    last_reply = now
                    if message["type"] == "message":
                        tenant, _, user_id = message["data"].decode().partition("\0")
                        on_change(tenant, user_id)
                    elif message["type"] == "subscribe":
                        on_subscribed()
                    continue
                if now - last_reply > 3 * CHANGES_PING_SECONDS:
                    raise Unavailable(
                        f"redis did not reply to pings on the changes channel for {3 * CHANGES_PING_SECONDS:g} s"
                    )
                if now - pinged >= CHANGES_PING_SECONDS:
                    await pubsub.ping()
                    pinged = now
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise Unavailable(f"redis unavailable: {exc}") from exc
        finally:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await pubsub.aclose()

    @_unavailable_on_connection_error
    async def list_connections(
        self, tenant: str, offset: int, limit: int, user_id: str = ""
    ) -> tuple[int, list[User]]:
        args = [tenant, offset, limit, user_id]
        reply = await self._list_connections(keys=[_order_key(tenant)], args=args)
        return int(reply[0]), [User.FromString(record) for record in reply[1:]]

    @_unavailable_on_connection_error
    async def node_map(self, tenant: str) -> dict[str, list[User]]:
        reply = await self._node_map(keys=[_order_key(tenant)], args=[tenant])
        nodes: dict[str, list[User]] = {}
        for record in reply:
            user = User.FromString(record)
            nodes.setdefault(user.node_id, []).append(user)
        return nodes

    # Edge nodes

    @_unavailable_on_connection_error
    async def register_node(self, node: Node) -> None:
        args = [node.node_id, node.SerializeToString(), node.ttl_seconds * 1000]
        await self._register_node(keys=["prim:nodes"], args=args)

    @_unavailable_on_connection_error
    async def list_nodes(self) -> list[Node]:
        reply = await self._list_nodes(keys=["prim:nodes"], args=[])
        return [Node.FromString(record) for record in reply]

    @_unavailable_on_connection_error
    async def unregister_node(self, node_id: str) -> int:
        removed = 0
        while True:
            args = [node_id, DRAIN_BATCH]
            popped, live = await self._drain_node(keys=["prim:nodes"], args=args)
            removed += live
            if popped < DRAIN_BATCH:
                return removed

    # Maintenance

    @_unavailable_on_connection_error
    async def sweep(self) -> int:
        removed = 0
        for _ in range(MAX_SWEEP_STEPS):
            examined, swept = await self._sweep(keys=["prim:expiry"], args=[SWEEP_BATCH])
            removed += swept
            if examined < SWEEP_BATCH:
                break
        return removed

    @_unavailable_on_connection_error
    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()
