"""The presence store interface, shared by the Redis and the in-memory backends.

A store keeps one entry per connection (``conn_id``) inside its tenant
(``User.sys_account``). An entry is the connection's full ``User`` record and
expires ``ttl_seconds`` after it was last written, unless refreshed. Reads never
return an expired entry, and :meth:`PresenceStore.sweep` removes expired entries
from the indexes.

A connection removed by Connect's device policy, by Disconnect or by
UnregisterNode leaves a tombstone for its last TTL, so a Refresh that was already
on its way cannot bring it back. An entry that merely expired leaves none, so
the next Refresh from its edge node restores it.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prim.pb.common_pb2 import Location, User
from prim.pb.presence_pb2 import Node

POLICY_PER_PLATFORM = "per-platform"
POLICY_SINGLE = "single"
POLICY_MULTI = "multi"
POLICIES = (POLICY_PER_PLATFORM, POLICY_SINGLE, POLICY_MULTI)

# Expired index members removed by one sweep step. A sweep runs steps until fewer remain.
SWEEP_BATCH = 1000


def location_of(user: User) -> Location:
    """Build the Location of a connection from its record."""
    return Location(
        user_id=user.user_id,
        app_platform=user.app_platform,
        node_id=user.node_id,
        conn_id=user.conn_id,
    )


def select_replaced(
    new: User, others: Sequence[User], policy: str, max_devices: int
) -> list[User]:
    """Return the live connections of the same user that ``new`` replaces.

    ``others`` are the user's other live connections. Under "multi" the new
    connection is always kept, and the oldest others (by login_time, then
    conn_id) beyond ``max_devices - 1`` are replaced.
    """
    if policy == POLICY_SINGLE:
        return list(others)
    if policy == POLICY_MULTI:
        oldest_first = sorted(others, key=lambda user: (user.login_time, user.conn_id))
        excess = len(oldest_first) - (max_devices - 1)
        return oldest_first[: max(excess, 0)]
    return [user for user in others if user.app_platform == new.app_platform]


class PresenceStore(abc.ABC):
    """Connections of users per tenant, with a TTL, and the registry of edge nodes.

    Connect, Disconnect and the reads are atomic: a concurrent call observes all of
    their effects or none. On Redis, Refresh, UnregisterNode and sweep are atomic per
    batch of connections only.

    Connection errors of the backend are raised as :class:`prim.errors.Unavailable`.
    """

    backend: str

    @abc.abstractmethod
    async def connect(
        self, user: User, policy: str, max_devices: int, ttl_seconds: int
    ) -> list[Location]:
        """Add the connection, remove the ones the policy replaces and return them."""

    async def connect_many(
        self, requests: Sequence[tuple[User, str, int, int]]
    ) -> list[list[Location] | Exception]:
        """:meth:`connect` for each ``(user, policy, max_devices, ttl_seconds)``, in order.

        A request that fails gets its exception in its place; the others go on.
        """
        return await _each(self.connect, requests)

    @abc.abstractmethod
    async def disconnect(self, tenant: str, user_id: str, conn_id: str) -> bool:
        """Remove the entry of ``conn_id`` if it belongs to ``user_id``. Return if it was live."""

    async def disconnect_many(
        self, requests: Sequence[tuple[str, str, str]]
    ) -> list[bool | Exception]:
        """:meth:`disconnect` for each ``(tenant, user_id, conn_id)``, in order.

        A request that fails gets its exception in its place; the others go on.
        """
        return await _each(self.disconnect, requests)

    @abc.abstractmethod
    async def refresh(self, node_id: str, users: Sequence[User], ttl_seconds: int) -> int:
        """Upsert a node's connection records and refresh the node. Return the count written."""

    @abc.abstractmethod
    async def locate(self, tenant: str, user_ids: Sequence[str]) -> list[Location]:
        """Return the live connections of the given users."""

    @abc.abstractmethod
    async def list_connections(
        self, tenant: str, offset: int, limit: int, user_id: str = ""
    ) -> tuple[int, list[User]]:
        """Return the count of live connections and one page ordered by user, platform, conn_id."""

    @abc.abstractmethod
    async def node_map(self, tenant: str) -> dict[str, list[User]]:
        """Return the tenant's live connections grouped by node id."""

    @abc.abstractmethod
    async def register_node(self, node: Node) -> None:
        """Add or replace the registration of an edge node for ``node.ttl_seconds``."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[Node]:
        """Return the edge nodes whose registration has not expired."""

    @abc.abstractmethod
    async def unregister_node(self, node_id: str) -> int:
        """Remove the node and every connection recorded on it. Return the live ones removed."""

    @abc.abstractmethod
    async def sweep(self) -> int:
        """Remove expired connections and nodes from the indexes. Return the count removed."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Check that the backend replies, or raise Unavailable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections to the backend."""


async def _each(method: Callable[..., Awaitable[Any]], requests: Sequence[tuple]) -> list[Any]:
    """Await ``method(*request)`` for each request in order, an exception taking its result's place."""
    results: list[Any] = []
    for request in requests:
        try:
            results.append(await method(*request))
        except Exception as exc:  # noqa: BLE001 - returned in the request's place
            results.append(exc)
    return results
