"""In-memory presence store, for development and tests.

It lives in one process, so it is valid only when a single presence replica
runs. Every method runs without awaiting, so each call is atomic on the event
loop.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import time
from collections.abc import Sequence

from prim.pb.common_pb2 import Location, User
from prim.pb.presence_pb2 import Node

from .store import PresenceStore, location_of, select_replaced

# (user_id, app_platform, conn_id): the order of ListConnections.
OrderKey = tuple[str, str, str]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass
class _Entry:
    record: User
    ttl_ms: int
    expires_ms: int

    @property
    def order_key(self) -> OrderKey:
        return (self.record.user_id, self.record.app_platform, self.record.conn_id)


@dataclasses.dataclass
class _Tenant:
    entries: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    order: list[OrderKey] = dataclasses.field(default_factory=list)
    # conn_id -> expiry (ms) of the tombstone left by a removal.
    tombstones: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _NodeEntry:
    node: Node
    expires_ms: int


class MemoryStore(PresenceStore):
    backend = "memory"

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        # Min-heap of (expires_ms, tenant, conn_id). An item is stale once its entry was rewritten.
        self._expiry: list[tuple[int, str, str]] = []
        self._nodes: dict[str, _NodeEntry] = {}
        # node_id -> {(tenant, conn_id)} of the connections recorded on that node.
        self._node_conns: dict[str, set[tuple[str, str]]] = {}

    # Connections

    async def connect(
        self, user: User, policy: str, max_devices: int, ttl_seconds: int
    ) -> list[Location]:
        now = now_ms()
        self._sweep(now)
        tenant = self._tenant(user.sys_account)
        tenant.tombstones.pop(user.conn_id, None)
        self._upsert(user, ttl_seconds * 1000, now)

        others = [
            entry.record
            for entry in self._user_entries(tenant, user.user_id)
            if entry.record.conn_id != user.conn_id
        ]
        replaced = select_replaced(user, others, policy, max_devices)
        for record in replaced:
            self._remove(user.sys_account, record.conn_id, now, tombstone=True)
        return [location_of(record) for record in replaced]

    async def disconnect(self, tenant: str, user_id: str, conn_id: str) -> bool:
        now = now_ms()
        entry = self._tenants.get(tenant, _Tenant()).entries.get(conn_id)
        if entry is None or entry.record.user_id != user_id:
            return False
        live = entry.expires_ms > now
        self._remove(tenant, conn_id, now, tombstone=True)
        return live

    async def refresh(self, node_id: str, users: Sequence[User], ttl_seconds: int) -> int:
        now = now_ms()
        refreshed = 0
        for user in users:
            tenant = self._tenant(user.sys_account)
            if tenant.tombstones.get(user.conn_id, 0) > now:
                continue
            self._upsert(user, ttl_seconds * 1000, now)
            refreshed += 1
        self._refresh_node(node_id, now)
        return refreshed

    async def locate(self, tenant: str, user_ids: Sequence[str]) -> list[Location]:
        now = now_ms()
        state = self._tenants.get(tenant, _Tenant())
        locations = []
        for user_id in dict.fromkeys(user_ids):
            for entry in self._user_entries(state, user_id):
                if entry.expires_ms > now:
                    locations.append(location_of(entry.record))
        return locations

    async def list_connections(
        self, tenant: str, offset: int, limit: int, user_id: str = ""
    ) -> tuple[int, list[User]]:
        self._sweep(now_ms())
        state = self._tenants.get(tenant, _Tenant())
        if user_id:
            start, end = self._user_range(state, user_id)
        else:
            start, end = 0, len(state.order)
        page = state.order[start + offset : min(start + offset + limit, end)]
        users = [state.entries[key[2]].record for key in page]
        return end - start, users

    async def node_map(self, tenant: str) -> dict[str, list[User]]:
        self._sweep(now_ms())
        state = self._tenants.get(tenant, _Tenant())
        nodes: dict[str, list[User]] = {}
        for key in state.order:
            record = state.entries[key[2]].record
            nodes.setdefault(record.node_id, []).append(record)
        return nodes

    # Edge nodes

    async def register_node(self, node: Node) -> None:
        stored = Node()
        stored.CopyFrom(node)
        self._nodes[node.node_id] = _NodeEntry(stored, now_ms() + node.ttl_seconds * 1000)

    async def list_nodes(self) -> list[Node]:
        now = now_ms()
        return [entry.node for entry in self._nodes.values() if entry.expires_ms > now]

    async def unregister_node(self, node_id: str) -> int:
        now = now_ms()
        self._nodes.pop(node_id, None)
        removed = 0
        for tenant, conn_id in self._node_conns.pop(node_id, set()):
            entry = self._tenant(tenant).entries.get(conn_id)
            if entry is None or entry.record.node_id != node_id:
                continue
            removed += entry.expires_ms > now
            self._remove(tenant, conn_id, now, tombstone=True)
        return removed

    # Maintenance

    async def sweep(self) -> int:
        return self._sweep(now_ms())

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._tenants.clear()
        self._nodes.clear()
        self._node_conns.clear()
        self._expiry.clear()

    # Helpers. None of them awaits.

    def _tenant(self, name: str) -> _Tenant:
        return self._tenants.setdefault(name, _Tenant())

    def _user_range(self, tenant: _Tenant, user_id: str) -> tuple[int, int]:
        start = bisect.bisect_left(tenant.order, (user_id,))
        end = start
        while end < len(tenant.order) and tenant.order[end][0] == user_id:
            end += 1
        return start, end

    def _user_entries(self, tenant: _Tenant, user_id: str) -> list[_Entry]:
        start, end = self._user_range(tenant, user_id)
        return [tenant.entries[key[2]] for key in tenant.order[start:end]]

    def _upsert(self, user: User, ttl_ms: int, now: int) -> None:
        tenant_name, conn_id = user.sys_account, user.conn_id
        tenant = self._tenant(tenant_name)
        old = tenant.entries.get(conn_id)
        if old is not None:
            self._unindex(tenant_name, old)
        record = User()
        record.CopyFrom(user)
        entry = _Entry(record, ttl_ms, now + ttl_ms)
        tenant.entries[conn_id] = entry
        bisect.insort(tenant.order, entry.order_key)
        self._node_conns.setdefault(user.node_id, set()).add((tenant_name, conn_id))
        heapq.heappush(self._expiry, (entry.expires_ms, tenant_name, conn_id))

    def _unindex(self, tenant_name: str, entry: _Entry) -> None:
        tenant = self._tenants[tenant_name]
        index = bisect.bisect_left(tenant.order, entry.order_key)
        if index < len(tenant.order) and tenant.order[index] == entry.order_key:
            del tenant.order[index]
        on_node = self._node_conns.get(entry.record.node_id)
        if on_node is not None:
            on_node.discard((tenant_name, entry.record.conn_id))
            if not on_node:
                del self._node_conns[entry.record.node_id]

    def _remove(self, tenant_name: str, conn_id: str, now: int, *, tombstone: bool) -> None:
        tenant = self._tenants[tenant_name]
        entry = tenant.entries.pop(conn_id)
        self._unindex(tenant_name, entry)
        if tombstone:
            tenant.tombstones[conn_id] = now + entry.ttl_ms
        if not tenant.entries and not tenant.tombstones:
            del self._tenants[tenant_name]

    def _refresh_node(self, node_id: str, now: int) -> None:
        entry = self._nodes.get(node_id)
        if entry is not None and entry.expires_ms > now:
            entry.expires_ms = now + entry.node.ttl_seconds * 1000

    def _sweep(self, now: int) -> int:
        removed = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires, tenant_name, conn_id = heapq.heappop(self._expiry)
            tenant = self._tenants.get(tenant_name)
            entry = tenant.entries.get(conn_id) if tenant else None
            # A refreshed entry has a later expiry and its own item further down the heap.
            if entry is not None and entry.expires_ms == expires:
                self._remove(tenant_name, conn_id, now, tombstone=False)
                removed += 1
        for tenant_name in list(self._tenants):
            self._drop_tombstones(tenant_name, now)
        for node_id in [key for key, entry in self._nodes.items() if entry.expires_ms <= now]:
            del self._nodes[node_id]
        return removed

    def _drop_tombstones(self, tenant_name: str, now: int) -> None:
        tenant = self._tenants[tenant_name]
        for conn_id in [key for key, expires in tenant.tombstones.items() if expires <= now]:
            del tenant.tombstones[conn_id]
        if not tenant.entries and not tenant.tombstones:
            del self._tenants[tenant_name]
