"""gRPC servicer of the presence service: checks each request, then calls the store."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from prim.errors import Code, PrimError, Unavailable, abort, invalid
from prim.ids import check_choice, check_id, check_int, check_user_id
from prim.pb import presence_pb2, presence_pb2_grpc
from prim.pb.common_pb2 import User

from .store import POLICIES, POLICY_MULTI, POLICY_PER_PLATFORM, PresenceStore

log = logging.getLogger("prim.presence")

MAX_TTL_SECONDS = 86_400
MAX_PAGE_SIZE = 1000
MAX_DEVICES = 1000
MAX_OFFSET = 2**31 - 1
MAX_ADDRESS_LENGTH = 255
# Repeats of one kind of failure within this window are counted instead of logged.
LOG_WINDOW_SECONDS = 10.0

Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _RepeatFilter:
    """Allow one log line per key and window, and count the suppressed ones."""

    def __init__(self, window_seconds: float):
        self._window = window_seconds
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """Return whether to log now, and how many lines were suppressed since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -self._window) < self._window:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


_repeats = _RepeatFilter(LOG_WINDOW_SECONDS)


def _request_ids(request: Any) -> dict[str, str]:
    """Return the tenant, user, node and connection ids of a request, for log lines."""
    source = request.user if isinstance(getattr(request, "user", None), User) else request
    ids = {}
    for field, key in (
        ("tenant", "tenant"),
        ("sys_account", "tenant"),
        ("user_id", "user_id"),
        ("node_id", "node_id"),
        ("conn_id", "conn_id"),
    ):
        value = getattr(source, field, "")
        if value:
            ids[key] = value
    return ids


def _log_failure(method: str, request: Any, error: PrimError) -> None:
    fields = {"method": method, "code": error.code.value, "error": error.msg}
    fields.update(_request_ids(request))
    if error.code in (Code.INVALID_PARAMETER, Code.INVALID_USER_ID):
        log.info("rejected invalid request", extra=fields)
        return
    allowed, suppressed = _repeats.allow(f"{method}:{type(error).__name__}")
    if allowed:
        level = logging.WARNING if isinstance(error, Unavailable) else logging.ERROR
        log.log(level, "call failed", extra={**fields, "suppressed": suppressed})


def rpc_method(method: Handler) -> Handler:
    """Turn a PrimError or an unexpected exception into a logged, aborted call."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except PrimError as exc:
            error = exc
            _log_failure(method.__name__, request, error)
        except Exception:
            log.exception("call failed", extra={"method": method.__name__, **_request_ids(request)})
            error = PrimError(Code.SERVER_ERROR, f"presence {method.__name__} failed")
        await abort(context, error)

    return wrapper


def check_ttl(field: str, value: int) -> int:
    return check_int(field, value, 1, MAX_TTL_SECONDS)


def check_record(field: str, user: User) -> None:
    """Check the ids of a connection record and raise PrimError naming the first invalid one."""
    check_id(f"{field}.sys_account", user.sys_account)
    check_user_id(f"{field}.user_id", user.user_id)
    check_id(f"{field}.app_platform", user.app_platform)
    check_id(f"{field}.node_id", user.node_id)
    check_id(f"{field}.conn_id", user.conn_id)


def check_address(field: str, value: str) -> str:
    """Check a ``host:port`` address such as ``127.0.0.1:50061`` or ``[::1]:50061``."""
    host, _, port = value.rpartition(":")
    if not host or len(value) > MAX_ADDRESS_LENGTH:
        raise invalid(field, value, f"must be host:port, at most {MAX_ADDRESS_LENGTH} characters")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise invalid(field, value, "port must be between 1 and 65535")
    return value


def _disconnect_args(request) -> tuple[str, str, str]:
    """Check a DisconnectRequest and return the store's disconnect arguments."""
    check_id("tenant", request.tenant)
    check_user_id("user_id", request.user_id)
    check_id("conn_id", request.conn_id)
    return request.tenant, request.user_id, request.conn_id


async def _run_batch(
    method: str,
    requests: Sequence[Any],
    check: Callable[[Any], tuple],
    run_many: Callable[[list[tuple]], Awaitable[list[Any]]],
    success: Callable[[Any], Any],
    result_type: Callable[..., Any],
) -> list[Any]:
    """Carry out a batch call: one result per request, in request order.

    ``check`` turns each request into store arguments or raises PrimError;
    the valid requests go to ``run_many`` together, which pipelines them.
    A request that fails gets a result with its contract code and message,
    and the others go on.
    """
    outcomes: list[Any] = [None] * len(requests)
    valid: list[tuple[int, tuple]] = []
    for index, single in enumerate(requests):
        try:
            valid.append((index, check(single)))
        except PrimError as exc:
            outcomes[index] = exc
    if valid:
        try:
            stored = await run_many([args for _, args in valid])
        except Exception as exc:  # noqa: BLE001 - each request of the batch gets it
            stored = [exc] * len(valid)
        for (index, _), result in zip(valid, stored, strict=True):
            outcomes[index] = result
    results = []
    for single, outcome in zip(requests, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            results.append(success(outcome))
            continue
        if isinstance(outcome, PrimError):
            _log_failure(method, single, outcome)
        else:
            fields = {"method": method, "error": repr(outcome), **_request_ids(single)}
            log.error("call failed", extra=fields)
            outcome = PrimError(Code.SERVER_ERROR, f"presence {method} failed")
        results.append(result_type(code=int(outcome.code), msg=outcome.msg))
    return results


class PresenceServicer(presence_pb2_grpc.PresenceServicer):
    def __init__(self, store: PresenceStore):
        self._store = store

    @rpc_method
    async def Connect(self, request, context):
        return await self._connect(request)

    async def ConnectBatch(self, request, context):
        results = await _run_batch(
            "ConnectBatch",
            request.requests,
            self._connect_args,
            self._store.connect_many,
            lambda replaced: presence_pb2.ConnectResult(
                reply=presence_pb2.ConnectReply(replaced=replaced)
            ),
            presence_pb2.ConnectResult,
        )
        return presence_pb2.ConnectBatchReply(results=results)

    def _connect_args(self, request) -> tuple:
        """Check a ConnectRequest and return the store's connect arguments."""
        check_record("user", request.user)
        policy = request.device_policy or POLICY_PER_PLATFORM
        check_choice("device_policy", policy, POLICIES)
        max_devices = request.max_devices
        if policy == POLICY_MULTI:
            check_int("max_devices", max_devices, 1, MAX_DEVICES)
        ttl = check_ttl("ttl_seconds", request.ttl_seconds)
        return request.user, policy, max_devices, ttl

    async def _connect(self, request) -> presence_pb2.ConnectReply:
        replaced = await self._store.connect(*self._connect_args(request))
        return presence_pb2.ConnectReply(replaced=replaced)

    @rpc_method
    async def Disconnect(self, request, context):
        removed = await self._store.disconnect(*_disconnect_args(request))
        return presence_pb2.DisconnectReply(removed=removed)

    async def DisconnectBatch(self, request, context):
        results = await _run_batch(
            "DisconnectBatch",
            request.requests,
            _disconnect_args,
            self._store.disconnect_many,
            lambda removed: presence_pb2.DisconnectResult(
                reply=presence_pb2.DisconnectReply(removed=removed)
            ),
            presence_pb2.DisconnectResult,
        )
        return presence_pb2.DisconnectBatchReply(results=results)

    @rpc_method
    async def Refresh(self, request, context):
        node_id = check_id("node_id", request.node_id)
        ttl = check_ttl("ttl_seconds", request.ttl_seconds)
        for index, user in enumerate(request.users):
            # The request's node_id is authoritative, and a record may leave its own empty.
            if not user.node_id:
                user.node_id = node_id
            elif user.node_id != node_id:
                raise invalid(f"users[{index}].node_id", user.node_id, f"must be {node_id!r}")
            check_record(f"users[{index}]", user)
        refreshed = await self._store.refresh(node_id, request.users, ttl)
        return presence_pb2.RefreshReply(refreshed=refreshed)

    @rpc_method
    async def Locate(self, request, context):
        check_id("tenant", request.tenant)
        for index, user_id in enumerate(request.user_ids):
            check_user_id(f"user_ids[{index}]", user_id)
        locations = await self._store.locate(request.tenant, request.user_ids)
        return presence_pb2.LocateReply(locations=locations)

    @rpc_method
    async def ListConnections(self, request, context):
        check_id("tenant", request.tenant)
        check_int("offset", request.offset, 0, MAX_OFFSET)
        check_int("limit", request.limit, 1, MAX_PAGE_SIZE)
        if request.user_id:
            check_user_id("user_id", request.user_id)
        total, users = await self._store.list_connections(
            request.tenant, request.offset, request.limit, request.user_id
        )
        return presence_pb2.ListConnectionsReply(total=total, users=users)

    @rpc_method
    async def NodeMap(self, request, context):
        check_id("tenant", request.tenant)
        nodes = await self._store.node_map(request.tenant)
        return presence_pb2.NodeMapReply(
            nodes=[
                presence_pb2.NodeUsers(node_id=node_id, users=nodes[node_id])
                for node_id in sorted(nodes)
            ]
        )

    @rpc_method
    async def RegisterNode(self, request, context):
        check_id("node_id", request.node_id)
        check_address("grpc_addr", request.grpc_addr)
        if request.http_addr:
            check_address("http_addr", request.http_addr)
        check_ttl("ttl_seconds", request.ttl_seconds)
        await self._store.register_node(request)
        return presence_pb2.RegisterNodeReply()

    @rpc_method
    async def UnregisterNode(self, request, context):
        check_id("node_id", request.node_id)
        removed = await self._store.unregister_node(request.node_id)
        log.info(
            "node unregistered",
            extra={"node_id": request.node_id, "removed_connections": removed},
        )
        return presence_pb2.UnregisterNodeReply(removed_connections=removed)

    @rpc_method
    async def ListNodes(self, request, context):
        nodes = await self._store.list_nodes()
        return presence_pb2.ListNodesReply(nodes=nodes)
