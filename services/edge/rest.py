"""The tenant REST API of the edge: request parsing, callers and routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from prim import __version__, ids, telemetry
from prim.errors import Code, PrimError, invalid
from prim.messages import message_from_proto
from prim.pb import auth_pb2, common_pb2, presence_pb2, router_pb2

from .frames import find_fault, user_dict
from .node import EdgeNode

log = logging.getLogger("prim.edge.rest")

LIST_SIZE_MAX = 500
HISTORY_LIMIT_MAX = 200
MAX_BODY_BYTES = 1024 * 1024
SETTINGS_FIELDS = ("allowedOrigins", "devicePolicy", "maxDevices", "defaultTtl")


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def ok(data: Any) -> Response:
    return JSON({"code": 200, "msg": "ok", "data": data})


def error_response(error: PrimError) -> Response:
    telemetry.record_error(error, "http")
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.http_status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="prim"'
    return JSON({"code": int(error.code), "msg": error.msg, "data": None}, error.http_status, headers)


# Parsing
#
# A JSON body is typed: each field must have its JSON type, and an empty
# string is a value. A form body or a query string contains only text, so
# numbers and booleans are parsed from it, and an empty field is absent, as
# an HTML form sends its blank inputs.

INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
# Maximum digits of a form integer, leading zeros apart. It is int()'s default limit
# (sys.get_int_max_str_digits), kept here in case the interpreter's limit is lifted.
INTEGER_MAX_DIGITS = 4300


class TextFields(dict):
    """The fields of a form body or a query string, all of them text."""


def query_fields(request: Request) -> TextFields:
    return TextFields(request.query_params)


def _given(data: dict, field: str) -> Any:
    """Return the field's value, or None when it is absent, null, or a blank form or query field."""
    value = data.get(field)
    if value == "" and isinstance(data, TextFields):
        return None
    return value


async def read_body(request: Request) -> dict[str, Any]:
    """Parse a JSON object or a form body into a dict; raise PrimError for other bodies."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PrimError(Code.TOO_LARGE, f"body too large: {len(body)} bytes, maximum {MAX_BODY_BYTES}")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return TextFields((key, value) for key, value in form.items() if isinstance(value, str))
    if not body.strip():
        return {}
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise _body_error(body) from None
    except RecursionError:
        raise PrimError(Code.INVALID_PARAMETER, "invalid body: nested too deeply") from None
    if not isinstance(data, dict):
        raise PrimError(Code.INVALID_PARAMETER, "invalid body: expected a JSON object")
    return data


def _body_error(body: bytes) -> PrimError:
    """Name the field when one value of a JSON body is the fault (see ``find_fault``)."""
    found = find_fault(body, "body")
    if found is None:
        return PrimError(Code.INVALID_PARAMETER, "invalid body: not JSON or a form")
    _, field, detail = found
    return PrimError(Code.INVALID_PARAMETER, f"invalid {field}{detail}")


def opt_str(data: dict, field: str, default: str = "", *, secret: bool = False) -> str:
    value = _given(data, field)
    if value is None:
        return default
    if not isinstance(value, str):
        if secret:
            raise PrimError(Code.INVALID_PARAMETER, f"invalid {field}: must be a string")
        raise invalid(field, value, "must be a string")
    return value


def opt_choice(data: dict, field: str, choices: tuple[str, ...], default: str = "") -> str:
    """Return the field's value when it is one of ``choices``, or ``default`` when it is absent.

    Any other value, non-strings and "" in JSON included, is rejected with the list of
    choices, as a msg frame rejects it. A blank form field is absent.
    """
    value = _given(data, field)
    if value is None:
        return default
    return ids.check_choice(field, value, choices)


def opt_int(data: dict, field: str, default: int | None = None) -> int | None:
    value = _given(data, field)
    if value is None:
        return default
    if isinstance(value, str) and isinstance(data, TextFields):
        # Plain ASCII digits only: int() would also take "1_0" and other scripts' digits.
        if not INTEGER_TEXT.fullmatch(value):
            raise invalid(field, value, "must be an integer")
        sign = value[0] if value[0] in "+-" else ""
        digits = value.lstrip("+-").lstrip("0") or "0"
        if len(digits) > INTEGER_MAX_DIGITS:
            raise invalid(field, value, "number out of range")
        try:
            return int(sign + digits)
        except ValueError:
            # int() rejects digits past a sys.get_int_max_str_digits() set lower than ours.
            raise invalid(field, value, "number out of range") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, value, "must be an integer")
    return value


def opt_bool(data: dict, field: str, default: bool) -> bool:
    value = _given(data, field)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(data, TextFields) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise invalid(field, value, "must be true or false")


def required(data: dict, field: str) -> Any:
    value = _given(data, field)
    if value is None:
        raise PrimError(Code.INVALID_PARAMETER, f"missing {field}")
    return value


def required_user_id(data: dict, field: str) -> str:
    """Return the user id in ``field``. Raise 1002 when it is missing or invalid, "" included."""
    value = _given(data, field)
    if value is None:
        raise PrimError(Code.INVALID_USER_ID, f"missing {field}")
    return ids.check_user_id(field, value)


# Callers


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_operator(request: Request) -> bool:
    node: EdgeNode = request.app.state.node
    token = _bearer(request)
    expected = node.settings.admin_token
    return bool(token and expected and hmac.compare_digest(token.encode(), expected.encode()))


async def require_operator(request: Request) -> None:
    if is_operator(request):
        return
    if _basic(request) is not None:
        await require_tenant(request)  # wrong credentials are 401, not 403
        raise PrimError(Code.FORBIDDEN, "forbidden: this route is for the operator only")
    raise PrimError(Code.UNAUTHORIZED, "unauthorized: operator token required")


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    account, sep, password = decoded.partition(":")
    return (account, password) if sep else None


async def require_tenant(request: Request) -> str:
    """Return the tenant account of the request's HTTP Basic credentials; raise PrimError if invalid."""
    credentials = _basic(request)
    if credentials is None:
        if is_operator(request):
            raise PrimError(Code.FORBIDDEN, "forbidden: the operator is not a tenant")
        raise PrimError(Code.UNAUTHORIZED, "unauthorized: tenant credentials required (HTTP Basic)")
    account, password = credentials
    node: EdgeNode = request.app.state.node
    client = request.client.host if request.client else ""
    tenant = await node.auth.call(
        "VerifyTenant", auth_pb2.VerifyTenantRequest(account=account, password=password, client_addr=client)
    )
    return tenant.account


def tenant_dict(tenant: auth_pb2.Tenant) -> dict[str, Any]:
    return {"account": tenant.account, "phoneNum": tenant.phone_num, "createdAt": tenant.created_at}


# Routes: tenants and tokens


async def create_sys_client(request: Request) -> Response:
    await require_operator(request)
    data = await read_body(request)
    account = ids.check_id("account", required(data, "account"))
    password = opt_str(data, "password", secret=True)
    if not 8 <= len(password) <= 128:
        raise PrimError(Code.INVALID_PARAMETER, "invalid password: must be 8-128 characters")
    phone = opt_str(data, "phoneNum")
    if _given(data, "phoneNum") is not None and not ids.PHONE_PATTERN.fullmatch(phone):
        raise invalid("phoneNum", phone, "must be up to 20 digits, optionally after a leading +")
    node: EdgeNode = request.app.state.node
    tenant = await node.auth.call(
        "CreateTenant", auth_pb2.CreateTenantRequest(account=account, password=password, phone_num=phone)
    )
    log.info("tenant created", extra={"account": account})
    return ok(tenant_dict(tenant))


async def get_sys_client(request: Request) -> Response:
    own = None if is_operator(request) else await require_tenant(request)
    account = ids.check_id("account", required(query_fields(request), "account"))
    if own is not None:
        if own != account:
            raise PrimError(Code.NOT_FOUND, f"account {account!r} not found")
    node: EdgeNode = request.app.state.node
    tenant = await node.auth.call("GetTenant", auth_pb2.GetTenantRequest(account=account))
    return ok(tenant_dict(tenant))


async def list_sys_clients(request: Request) -> Response:
    await require_operator(request)
    page, size = _page_args(request)
    node: EdgeNode = request.app.state.node
    reply = await node.auth.call(
        "ListTenants", auth_pb2.ListTenantsRequest(offset=(page - 1) * size, limit=size)
    )
    return ok({"total": reply.total, "sysClients": [tenant_dict(t) for t in reply.tenants]})


async def get_token(request: Request) -> Response:
    tenant = await require_tenant(request)
    data = await read_body(request)
    user_id = required_user_id(data, "userId")
    platform = opt_choice(data, "appPlatform", ids.PLATFORMS, "web")
    ttl = opt_int(data, "ttl")
    if ttl is not None:
        ids.check_int("ttl", ttl, ids.TTL_MIN_SECONDS, ids.TTL_MAX_SECONDS)
    node: EdgeNode = request.app.state.node
    reply = await node.auth.call(
        "IssueToken",
        auth_pb2.IssueTokenRequest(
            tenant=tenant,
            user_id=user_id,
            app_platform=platform,
            nickname=opt_str(data, "nickname"),
            avatar=opt_str(data, "avatar"),
            ttl_seconds=ttl or 0,
        ),
    )
    return ok(
        {"token": reply.token, "userId": reply.user_id, "appPlatform": reply.app_platform, "expiresAt": reply.expires_at}
    )


async def exit_client(request: Request) -> Response:
    tenant = await require_tenant(request)
    data = await read_body(request)
    user_id = required_user_id(data, "userId")
    # Absent means every platform. An empty string is an invalid platform, not "every".
    platform = opt_choice(data, "appPlatform", ids.PLATFORMS)
    node: EdgeNode = request.app.state.node
    revoked = await node.auth.call(
        "RevokeTokens", auth_pb2.RevokeTokensRequest(tenant=tenant, user_id=user_id, app_platform=platform)
    )
    # NOTE: a login whose token check passed just before RevokeTokens, and whose
    # connection joins its hub just after this Kick, stays open until the
    # token's original expiry, when the node's sweep finds it revoked.
    kicked = await node.router.call(
        "Kick",
        router_pb2.KickRequest(tenant=tenant, user_id=user_id, app_platform=platform, reason="revoked"),
    )
    return ok({"revoked": revoked.revoked, "closed": kicked.closed})


async def update_token_val(request: Request) -> Response:
    tenant = await require_tenant(request)
    data = await read_body(request)
    ttl = opt_int(data, "ttl")
    if ttl is None:
        raise PrimError(Code.INVALID_PARAMETER, "missing ttl")
    ids.check_int("ttl", ttl, ids.TTL_MIN_SECONDS, ids.TTL_MAX_SECONDS)
    token = opt_str(data, "token", secret=True)
    if _given(data, "token") == "":
        # Without a token the call changes the whole tenant's lifetime, so "" must not mean that.
        raise PrimError(
            Code.INVALID_PARAMETER, "invalid token '': leave it out to change the tenant's lifetime"
        )
    node: EdgeNode = request.app.state.node
    reply = await node.auth.call(
        "UpdateTokenTtl", auth_pb2.UpdateTokenTtlRequest(tenant=tenant, ttl_seconds=ttl, token=token)
    )
    if token:
        return ok({"expiresAt": reply.expires_at})
    return ok({"defaultTtl": reply.default_ttl_seconds})


async def update_settings(request: Request) -> Response:
    """Change the tenant's own settings; an empty body returns them unchanged."""
    tenant = await require_tenant(request)
    data = await read_body(request)
    update = auth_pb2.UpdateTenantRequest(account=tenant)
    default_ttl = opt_int(data, "defaultTtl")
    if default_ttl is not None:
        update.default_ttl_seconds = ids.check_int(
            "defaultTtl", default_ttl, ids.TTL_MIN_SECONDS, ids.TTL_MAX_SECONDS
        )
    policy = opt_choice(data, "devicePolicy", ids.DEVICE_POLICIES)
    if policy:
        update.device_policy = policy
    max_devices = opt_int(data, "maxDevices")
    if max_devices is not None:
        update.max_devices = ids.check_int("maxDevices", max_devices, 1, ids.MAX_DEVICES_LIMIT)
    # Not _given: in a form, a blank allowedOrigins clears the list, as documented.
    if data.get("allowedOrigins") is not None:
        update.set_allowed_origins = True
        origins = _origins(data["allowedOrigins"], isinstance(data, TextFields))
        update.allowed_origins.extend(origins)
    node: EdgeNode = request.app.state.node
    reply = await node.auth.call("UpdateTenant", update)
    fields = [field for field in SETTINGS_FIELDS if _given(data, field) is not None]
    log.info("tenant settings updated", extra={"account": tenant, "fields": fields})
    return ok(settings_dict(reply))


def _origins(value: Any, text: bool) -> list[str]:
    """Check ``allowedOrigins``: a JSON list of origins, or in a form one comma-separated string."""
    if text and isinstance(value, str):
        origins = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        origins = value
    else:
        raise invalid(
            "allowedOrigins", value, "must be a list of origins such as https://app.example.com"
        )
    if len(origins) > ids.MAX_ORIGINS:
        raise invalid(
            "allowedOrigins", f"{len(origins)} origins", f"must be at most {ids.MAX_ORIGINS}"
        )
    for origin in origins:
        if len(origin) > ids.ORIGIN_MAX_CHARS or not ids.ORIGIN_PATTERN.fullmatch(origin):
            raise invalid(
                "allowedOrigins",
                origin[: ids.ORIGIN_MAX_CHARS],
                f"each origin must be scheme://host[:port] without a path, at most"
                f" {ids.ORIGIN_MAX_CHARS} characters, such as https://app.example.com",
            )
    return origins


def settings_dict(tenant: auth_pb2.Tenant) -> dict[str, Any]:
    return {
        "account": tenant.account,
        "allowedOrigins": list(tenant.allowed_origins),
        "devicePolicy": tenant.device_policy,
        "maxDevices": tenant.max_devices,
        "defaultTtl": tenant.default_ttl_seconds,
    }


# Routes: users


def _page_args(request: Request) -> tuple[int, int]:
    query = query_fields(request)
    page = opt_int(query, "page", 1)
    size = opt_int(query, "size", 100)
    ids.check_int("page", page, 1, 1_000_000)
    ids.check_int("size", size, 1, LIST_SIZE_MAX)
    return page, size


async def user_list(request: Request) -> Response:
    tenant = await require_tenant(request)
    page, size = _page_args(request)
    node: EdgeNode = request.app.state.node
    reply = await node.presence.call(
        "ListConnections",
        presence_pb2.ListConnectionsRequest(tenant=tenant, offset=(page - 1) * size, limit=size),
    )
    return ok({"total": reply.total, "users": [user_dict(u) for u in reply.users]})


async def user_online(request: Request) -> Response:
    tenant = await require_tenant(request)
    data = await read_body(request)
    user_id = required_user_id(data, "userId")
    node: EdgeNode = request.app.state.node
    reply = await node.presence.call(
        "ListConnections",
        presence_pb2.ListConnectionsRequest(tenant=tenant, user_id=user_id, offset=0, limit=1000),
    )
    devices = [user_dict(u) for u in reply.users]
    return ok({"userId": user_id, "online": bool(devices), "devices": devices})


async def list_user_maps(request: Request) -> Response:
    tenant = await require_tenant(request)
    node: EdgeNode = request.app.state.node
    reply = await node.presence.call("NodeMap", presence_pb2.NodeMapRequest(tenant=tenant))
    return ok({entry.node_id: [user_dict(u) for u in entry.users] for entry in reply.nodes})


# Routes: messages


async def send_msg(request: Request) -> Response:
    tenant = await require_tenant(request)
    data = await read_body(request)
    node: EdgeNode = request.app.state.node
    sender_id = required_user_id(data, "from")
    to_all = opt_bool(data, "all", False)
    # An empty message in JSON is valid, as in a msg frame, because a typing indicator may
    # carry no text.
    message = ids.check_text("message", required(data, "message"), node.settings.max_message_bytes)
    msg_type = opt_choice(data, "msgType", ids.MSG_TYPES, "info")
    cont_type = opt_choice(data, "msgContType", ids.MSG_CONT_TYPES, "text")
    client_msg_id = opt_str(data, "clientMsgId")
    if len(client_msg_id) > 128:
        raise invalid("clientMsgId", client_msg_id, "must be a string of at most 128 characters")
    persist = opt_bool(data, "persist", True)
    profile = await node.auth.call("GetProfile", auth_pb2.GetProfileRequest(tenant=tenant, user_id=sender_id))
    sender = common_pb2.Profile(user_id=sender_id, nickname=profile.nickname, avatar=profile.avatar)
    if to_all:
        reply = await node.router.call(
            "Broadcast",
            router_pb2.BroadcastRequest(
                tenant=tenant,
                sender=sender,
                message=message,
                msg_type=msg_type,
                msg_cont_type=cont_type,
                client_msg_id=client_msg_id,
                persist=persist,
            ),
        )
        return ok(
            {
                "msgId": reply.msg_id,
                "seq": 0,
                "broadcastSeq": reply.broadcast_seq,
                "time": reply.time,
                "delivered": reply.delivered,
            }
        )
    to = required_user_id(data, "to")
    reply = await node.send_counted(
        router_pb2.SendRequest(
            tenant=tenant,
            sender=sender,
            to=to,
            message=message,
            msg_type=msg_type,
            msg_cont_type=cont_type,
            client_msg_id=client_msg_id,
            persist=persist,
        ),
    )
    return ok({"msgId": reply.msg_id, "seq": reply.seq, "time": reply.time, "delivered": reply.delivered})


def _cursor_args(query: dict) -> dict[str, int]:
    cursors = {}
    for field, key in (("beforeSeq", "before_seq"), ("afterSeq", "after_seq")):
        value = opt_int(query, field)
        if value is not None:
            # beforeSeq 0 would name no message, so it starts at 1.
            lowest = 1 if field == "beforeSeq" else 0
            cursors[key] = ids.check_int(field, value, lowest, ids.SEQ_MAX)
    if len(cursors) == 2:
        raise PrimError(Code.INVALID_PARAMETER, "invalid beforeSeq/afterSeq: set at most one of them")
    limit = opt_int(query, "limit", 50)
    ids.check_int("limit", limit, 1, HISTORY_LIMIT_MAX)
    cursors["limit"] = limit
    return cursors


def _page(reply: common_pb2.MessagePage) -> Response:
    return ok({"messages": [message_from_proto(m) for m in reply.messages], "hasMore": reply.has_more})


async def get_msg(request: Request) -> Response:
    tenant = await require_tenant(request)
    query = query_fields(request)
    user_id = required_user_id(query, "userId")
    peer_id = required_user_id(query, "peerId")
    node: EdgeNode = request.app.state.node
    reply = await node.router.call(
        "History",
        router_pb2.HistoryRequest(tenant=tenant, user_id=user_id, peer_id=peer_id, **_cursor_args(query)),
    )
    return _page(reply)


async def get_broadcast(request: Request) -> Response:
    tenant = await require_tenant(request)
    node: EdgeNode = request.app.state.node
    reply = await node.router.call(
        "BroadcastHistory",
        router_pb2.BroadcastHistoryRequest(tenant=tenant, **_cursor_args(query_fields(request))),
    )
    return _page(reply)


# Routes: system


async def system_state(request: Request) -> Response:
    node: EdgeNode = request.app.state.node
    try:
        nodes = (await node.presence.call("ListNodes", presence_pb2.ListNodesRequest())).nodes
        edges_alive = len(nodes)
    except PrimError:
        nodes, edges_alive = [], None
    if node.draining:
        status = "draining"
    elif await node.ready():
        status = "ok"
    else:
        status = "degraded"
    data: dict[str, Any] = {
        "status": status,
        "version": __version__,
        "connections": len(node.hub),
        "edgesAlive": edges_alive,
    }
    if is_operator(request):
        data["details"] = {
            "nodeId": node.node_id,
            "startedAt": node.started_at,
            "tenantsOnline": len(node.hub.by_tenant),
            "edges": [
                {"nodeId": n.node_id, "grpcAddr": n.grpc_addr, "httpAddr": n.http_addr, "startedAt": n.started_at}
                for n in nodes
            ],
        }
    return ok(data)


async def healthz(request: Request) -> Response:
    return ok({"status": "alive"})


async def readyz(request: Request) -> Response:
    node: EdgeNode = request.app.state.node
    if await node.ready():
        return ok({"status": "ready"})
    status = "draining" if node.draining else "a dependency is unreachable"
    return JSON({"code": 1004, "msg": f"not ready: {status}", "data": None}, 503)
