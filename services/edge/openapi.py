"""Hand-written OpenAPI 3.1 schema of the edge's REST API, served at ``/openapi.json``.

The schema describes what ``rest.py`` parses and returns. Limits shared with the
code come from ``prim.ids``, ``rest`` and ``session`` so that they cannot drift apart.
``tests/test_openapi.py`` checks that every HTTP route in ``app.ROUTES`` is
described here with the same methods and the expected security.
"""

from __future__ import annotations

from typing import Any

from prim import __version__, ids

from .rest import HISTORY_LIMIT_MAX, LIST_SIZE_MAX, MAX_BODY_BYTES
from .session import BROADCAST_SYNC_LIMIT_MAX, SYNC_LIMIT_MAX

Schema = dict[str, Any]

# Limits enforced by the auth service (passwords, profile text) or by literals in rest.py.
# They have no constant the edge can import, so they are copied here.
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128
PROFILE_TEXT_MAX_CHARS = 256
CLIENT_MSG_ID_MAX_CHARS = 128
PAGE_MAX = 1_000_000

ID_PATTERN = "^" + ids.ID_PATTERN.pattern + "$"
PHONE_PATTERN = "^" + ids.PHONE_PATTERN.pattern + "$"

# Security requirements per kind of caller. ``{}`` allows anonymous calls.
OPERATOR = [{"operator": []}]
TENANT = [{"tenant": []}]
OPERATOR_OR_TENANT = [{"operator": []}, {"tenant": []}]
ANYONE: list = []
ANYONE_OR_OPERATOR = [{}, {"operator": []}]

CALLER_TEXT = {
    "operator": (
        "Caller: the operator (`Authorization: Bearer <admin token>`). A tenant gets 403 / 1013."
    ),
    "tenant": (
        "Caller: a tenant backend (HTTP Basic `account:password`). "
        "The call acts inside that tenant only, and the operator gets 403 / 1013."
    ),
    "operator_or_tenant": (
        "Caller: the operator (bearer token), or the tenant itself (HTTP Basic). A tenant asking "
        "for another account gets 404 / 1005."
    ),
    "anyone": "Caller: anyone, no credentials needed.",
}

# (code, HTTP status, meaning) of every error code in the `Error` envelope.
ERROR_CODES = [
    (1000, "-", "not logged in (WebSocket only)"),
    (1001, "400", "invalid parameter"),
    (1002, "400", "invalid user id"),
    (1003, "401", "unauthorized: missing or wrong credentials or token"),
    (
        1004,
        "500 / 503",
        "server error, or 503 when a dependency (a service, MongoDB, Redis) is down",
    ),
    (1005, "404", "not found, also for something that belongs to another tenant"),
    (1009, "409", "operation failed, such as an account that is already taken"),
    (1010, "-", "unknown command (WebSocket only)"),
    (1011, "413", "too large"),
    (1012, "429", "rate limited after too many failed tenant logins, see `Retry-After`"),
    (1013, "403", "forbidden: an operator-only route, or the operator on a tenant route"),
]

# Name in components.responses, and description, per HTTP error status.
ERROR_RESPONSES = {
    400: (
        "BadRequest",
        "Invalid input (1001, or 1002 for a user id). `msg` names the field and its value.",
    ),
    401: ("Unauthorized", "Missing or wrong credentials (1003)."),
    403: ("Forbidden", "The caller may not use this route (1013)."),
    404: ("NotFound", "Not found, or owned by another tenant (1005)."),
    409: ("Conflict", "Conflict (1009)."),
    413: (
        "TooLarge",
        (
            f"Too large (1011): a body over {MAX_BODY_BYTES} bytes, or a `message` over the "
            "edge's `max_message_bytes` setting (65,536 bytes of UTF-8 by default)."
        ),
    ),
    429: (
        "RateLimited",
        "Too many failed tenant logins (1012). Retry after `Retry-After` seconds.",
    ),
    500: ("ServerError", "Unexpected server error (1004)."),
    503: (
        "Unavailable",
        "A dependency (auth, presence, router, MongoDB or Redis) is unreachable (1004).",
    ),
}

TENANT_ERRORS = (401, 403, 429, 500, 503)


# Small schema builders


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def object_schema(
    properties: dict[str, Schema], required: list[str] | None = None, **extra: Any
) -> Schema:
    """Build an object schema. Every property is required unless ``required`` lists fewer."""
    schema: Schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


def string(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "string", **extra}, description)


def integer(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "integer", **extra}, description)


def boolean(description: str = "", **extra: Any) -> Schema:
    return _described({"type": "boolean", **extra}, description)


def identifier(description: str) -> Schema:
    return string(description, pattern=ID_PATTERN, minLength=1, maxLength=64)


def timestamp(description: str) -> Schema:
    return integer(description + " Milliseconds since the Unix epoch.", format="int64")


def _described(schema: Schema, description: str) -> Schema:
    if description:
        schema["description"] = description
    return schema


def ttl(description: str, **extra: Any) -> Schema:
    return integer(
        description + f" Seconds, {ids.TTL_MIN_SECONDS} to {ids.TTL_MAX_SECONDS} (30 days).",
        minimum=ids.TTL_MIN_SECONDS,
        maximum=ids.TTL_MAX_SECONDS,
        **extra,
    )


def history_cursors() -> list[Schema]:
    return [
        query(
            "beforeSeq",
            integer(
                "Return the newest `limit` messages before this seq.",
                minimum=1,
                maximum=ids.SEQ_MAX,
            ),
        ),
        query(
            "afterSeq",
            integer(
                "Return the oldest `limit` messages after this seq. Not together with `beforeSeq`.",
                minimum=0,
                maximum=ids.SEQ_MAX,
            ),
        ),
        query(
            "limit",
            integer("Page size.", minimum=1, maximum=HISTORY_LIMIT_MAX, default=50),
        ),
    ]


# Operation builders


def query(name: str, schema: Schema, required: bool = False) -> Schema:
    parameter: Schema = {"name": name, "in": "query", "required": required, "schema": schema}
    if "description" in schema:
        parameter["description"] = schema["description"]
    return parameter


def body(schema: Schema) -> Schema:
    """Build a request body that is accepted as JSON or as a form with the same fields."""
    return {
        "required": True,
        "description": (
            "A JSON object, or a form (`application/x-www-form-urlencoded` or "
            "`multipart/form-data`) with the same fields. Form booleans are `true`/`false` or "
            f"`1`/`0`. At most {MAX_BODY_BYTES} bytes."
        ),
        "content": {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
            "multipart/form-data": {"schema": schema},
        },
    }


def success(description: str, data: Schema) -> Schema:
    envelope = object_schema(
        {
            "code": {"type": "integer", "const": 200},
            "msg": {"type": "string", "const": "ok"},
            "data": data,
        }
    )
    return {"description": description, "content": {"application/json": {"schema": envelope}}}


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    caller: str,
    ok: Schema,
    errors: tuple[int, ...],
    parameters: list[Schema] | None = None,
    request_body: Schema | None = None,
) -> Schema:
    """Build one operation. The sentence naming the allowed ``caller`` ends its description."""
    security = {
        "operator": OPERATOR,
        "tenant": TENANT,
        "operator_or_tenant": OPERATOR_OR_TENANT,
        "anyone": ANYONE,
    }[caller]
    responses: Schema = {"200": ok}
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
    result: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{CALLER_TEXT[caller]}",
        "security": security,
        "responses": responses,
    }
    if parameters:
        result["parameters"] = parameters
    if request_body:
        result["requestBody"] = request_body
    return result


# Component schemas


def user_schema() -> Schema:
    return object_schema(
        {
            "accIp": string("Host of the edge node that holds the connection."),
            "accPort": string("Port of that edge node, as a string."),
            "appPlatform": string(enum=list(ids.PLATFORMS)),
            "sysAccount": string("Tenant account."),
            "userId": identifier("User id inside the tenant."),
            "avatar": string(),
            "nickname": string(),
            "clientIp": string("Address of the client as the edge saw it."),
            "clientPort": string("Client port, as a string."),
            "loginTime": timestamp("Login time."),
            "heartbeatTime": timestamp("Last heartbeat or frame."),
            "logOutTime": timestamp("Logout time, 0 while online."),
            "address": string("Free text sent by the client at login."),
            "qua": string("Free text sent by the client at login."),
            "deviceInfo": string("Free text sent by the client at login."),
            "isLogoff": boolean(),
        },
        description=(
            "One live connection of a user, filled in by the platform. "
            "Its identity fields are never taken from the client."
        ),
    )


def message_schema() -> Schema:
    required = [
        "msgId",
        "seq",
        "time",
        "from",
        "to",
        "message",
        "msgType",
        "msgContType",
        "clientMsgId",
    ]
    return object_schema(
        {
            "msgId": string("Message id."),
            "seq": integer(
                "Position on the timeline of the user it is shown to (1, 2, 3, ... with no gaps). "
                "0 for an online-only message and for a broadcast.",
                minimum=0,
            ),
            "time": timestamp("Time the message was accepted."),
            "from": object_schema(
                {"userId": identifier("Sender."), "nickname": string(), "avatar": string()},
                description=(
                    "Sender profile, from the sender's token, or from the last `getToken` "
                    "of a REST sender."
                ),
            ),
            "to": string("Recipient user id, empty for a broadcast."),
            "message": string("Text, delivered byte for byte."),
            "msgType": string(enum=list(ids.MSG_TYPES)),
            "msgContType": string(enum=list(ids.MSG_CONT_TYPES)),
            "clientMsgId": string(
                "The sender's idempotency key, empty if none.", maxLength=CLIENT_MSG_ID_MAX_CHARS
            ),
            "broadcastSeq": integer(
                "Position in the tenant's broadcast history. Only on broadcasts.", minimum=1
            ),
        },
        required,
        description=(
            "A chat message as pushed (`cmd` `msg`) and as returned by `sync`, `getMsg` "
            "and `getBroadcast`."
        ),
    )


def sys_client_schema() -> Schema:
    return object_schema(
        {
            "account": identifier("Tenant account."),
            "phoneNum": string("Phone number, empty if none."),
            "createdAt": timestamp("Creation time."),
        },
        description="A tenant (`SysClient`). The password is never returned.",
    )


def message_page_schema() -> Schema:
    return object_schema(
        {
            "messages": {
                "type": "array",
                "items": ref("Message"),
                "description": "Ascending by seq.",
            },
            "hasMore": boolean(
                "Whether more messages exist further in the direction of the cursor."
            ),
        }
    )


def error_schema() -> Schema:
    rows = "\n".join(f"| {code} | {status} | {meaning} |" for code, status, meaning in ERROR_CODES)
    return object_schema(
        {
            "code": integer(enum=[code for code, _, _ in ERROR_CODES]),
            "msg": string(
                "What failed. Names the field at fault and its value, unless the value is a secret."
            ),
            "data": {"type": "null"},
        },
        description=(
            "Error envelope, sent with the matching HTTP status.\n\n"
            f"| code | HTTP | meaning |\n|---|---|---|\n{rows}"
        ),
    )


def error_response(name: str, description: str, status: int) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": '`Basic realm="prim"`',
                "schema": {"type": "string"},
            }
        }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds until the limit lifts.",
                "schema": {"type": "integer"},
            }
        }
    return response


def components() -> Schema:
    return {
        "securitySchemes": {
            "operator": {
                "type": "http",
                "scheme": "bearer",
                "description": "The operator's admin token from the edge setting `admin_token`. "
                "An empty setting disables operator routes.",
            },
            "tenant": {
                "type": "http",
                "scheme": "basic",
                "description": (
                    "`account:password` of the tenant's SysClient. The password may contain `:` "
                    "and spaces. Failed logins are rate-limited (by default 10 per account and "
                    "50 per client address per minute)."
                ),
            },
        },
        "schemas": {
            "Error": error_schema(),
            "User": user_schema(),
            "Message": message_schema(),
            "SysClient": sys_client_schema(),
            "MessagePage": message_page_schema(),
        },
        "responses": {
            name: error_response(name, description, status)
            for status, (name, description) in ERROR_RESPONSES.items()
        },
    }


# Paths


def sys_client_paths() -> Schema:
    create = operation(
        "createSysClient",
        "sysClient",
        "Create a tenant",
        "Creates a tenant (SysClient). A taken account is 409 / 1009.",
        "operator",
        success("The new tenant.", ref("SysClient")),
        (400, 401, 403, 409, 413, 500, 503),
        request_body=body(
            object_schema(
                {
                    "account": identifier("Tenant account, case-sensitive."),
                    "password": string(
                        "Tenant password, in characters.",
                        minLength=PASSWORD_MIN_CHARS,
                        maxLength=PASSWORD_MAX_CHARS,
                        format="password",
                        writeOnly=True,
                    ),
                    "phoneNum": string(
                        "Up to 20 digits, optionally after a leading `+`.", pattern=PHONE_PATTERN
                    ),
                },
                ["account", "password"],
            )
        ),
    )
    get = operation(
        "getSysClient",
        "sysClient",
        "Get a tenant",
        "Returns a tenant's account, phone number and creation time.",
        "operator_or_tenant",
        success("The tenant.", ref("SysClient")),
        (400, 401, 404, 429, 500, 503),
        parameters=[query("account", identifier("Tenant account."), required=True)],
    )
    list_all = operation(
        "listSysClients",
        "sysClient",
        "List tenants",
        "Returns one page of tenants ordered by account. Added to the original routes for the "
        "operator's web console.",
        "operator",
        success(
            "A page of tenants.",
            object_schema(
                {
                    "total": integer("All tenants, not only this page.", minimum=0),
                    "sysClients": {"type": "array", "items": ref("SysClient")},
                }
            ),
        ),
        (400, 401, 403, 500, 503),
        parameters=[
            query("page", integer("Page number.", minimum=1, maximum=PAGE_MAX, default=1)),
            query("size", integer("Page size.", minimum=1, maximum=LIST_SIZE_MAX, default=100)),
        ],
    )
    get_token = operation(
        "getToken",
        "sysClient",
        "Issue a user token",
        "Issues a token for one user and platform of the tenant. The user opens `/acc` with it. "
        "`nickname` and `avatar` are stored as the user's profile for messages sent over REST.",
        "tenant",
        success(
            "The token.",
            object_schema(
                {
                    "token": string("Secret. Send it to the user's client only."),
                    "userId": identifier("User id."),
                    "appPlatform": string(enum=list(ids.PLATFORMS)),
                    "expiresAt": timestamp("Expiry time."),
                }
            ),
        ),
        (400, 413, *TENANT_ERRORS),
        request_body=body(
            object_schema(
                {
                    "userId": identifier("User id."),
                    "appPlatform": string(enum=list(ids.PLATFORMS), default="web"),
                    "nickname": string(maxLength=PROFILE_TEXT_MAX_CHARS),
                    "avatar": string(maxLength=PROFILE_TEXT_MAX_CHARS),
                    "ttl": ttl(
                        "Token lifetime. Default: the tenant's lifetime for new tokens, "
                        "initially 12 hours."
                    ),
                },
                ["userId"],
            )
        ),
    )
    exit_user = operation(
        "exit",
        "sysClient",
        "Revoke a user's tokens",
        "Revokes every token of the user (or of one platform). Every such connection on every edge "
        "node gets a `kick` push with reason `revoked` and is closed.",
        "tenant",
        success(
            "What was revoked.",
            object_schema(
                {
                    "revoked": integer("Tokens revoked.", minimum=0),
                    "closed": integer("Connections closed.", minimum=0),
                }
            ),
        ),
        (400, 413, *TENANT_ERRORS),
        request_body=body(
            object_schema(
                {
                    "userId": identifier("User id."),
                    "appPlatform": string(
                        "Only this platform. Default: all platforms.", enum=list(ids.PLATFORMS)
                    ),
                },
                ["userId"],
            )
        ),
    )
    update_ttl = operation(
        "updateTokenVal",
        "sysClient",
        "Change a token's or the tenant's lifetime",
        "With `token`, sets that token to expire `ttl` seconds from now. Without it, sets the "
        "tenant's lifetime for new tokens. A token of another tenant is 404 / 1005.",
        "tenant",
        success(
            "`expiresAt` with a token, `defaultTtl` without.",
            {
                "oneOf": [
                    object_schema({"expiresAt": timestamp("New expiry time of the token.")}),
                    object_schema({"defaultTtl": integer("Lifetime of new tokens, in seconds.")}),
                ]
            },
        ),
        (400, 404, 413, *TENANT_ERRORS),
        request_body=body(
            object_schema(
                {
                    "ttl": ttl("New lifetime."),
                    "token": string(
                        "Token to change. Omit it (or leave it blank in a form) to change the "
                        "tenant default. An empty string in JSON is rejected."
                    ),
                },
                ["ttl"],
            )
        ),
    )
    settings = settings_operation()
    return {
        "/sysClient/createSysClient": {"post": create},
        "/sysClient/getSysClient": {"get": get},
        "/sysClient/listSysClients": {"get": list_all},
        "/sysClient/getToken": {"post": get_token},
        "/sysClient/exit": {"post": exit_user},
        "/sysClient/updateTokenVal": {"post": update_ttl},
        "/sysClient/updateSettings": {"post": settings},
    }


def settings_operation() -> Schema:
    origin = string(
        "An origin as browsers send it: scheme://host[:port], without a path.",
        pattern="^" + ids.ORIGIN_PATTERN.pattern + "$",
        maxLength=ids.ORIGIN_MAX_CHARS,
    )
    origins = {
        "description": (
            "Origins whose browsers may open WebSockets for this tenant's users; an empty list "
            "allows every origin. A connection without an `Origin` header (an app, a server) is "
            "always allowed. Compared exactly, as browsers send them. In a form, one string "
            "of comma-separated origins."
        ),
        "oneOf": [
            {"type": "array", "items": origin, "maxItems": ids.MAX_ORIGINS},
            string("In a form only: comma-separated origins. A blank field clears the list."),
        ],
    }
    policy = string(
        "Which connections a new login replaces: `per-platform` (the user's connection on the "
        "same platform), `single` (every other connection of the user) or `multi` (the oldest "
        "ones past `maxDevices`).",
        enum=list(ids.DEVICE_POLICIES),
    )
    max_devices = integer(
        "Connections per user under the `multi` policy.", minimum=1, maximum=ids.MAX_DEVICES_LIMIT
    )
    default_ttl = ttl("Lifetime of new tokens.")
    return operation(
        "updateSettings",
        "sysClient",
        "Change the tenant's settings",
        "Sets the fields given and returns all settings; an empty body changes nothing. Added to "
        "the original routes. The change reaches new logins within a few seconds.",
        "tenant",
        success(
            "The tenant's settings after the change.",
            object_schema(
                {
                    "account": identifier("Tenant account."),
                    "allowedOrigins": {"type": "array", "items": string()},
                    "devicePolicy": policy,
                    "maxDevices": max_devices,
                    "defaultTtl": default_ttl,
                }
            ),
        ),
        (400, 413, *TENANT_ERRORS),
        request_body=body(
            object_schema(
                {
                    "allowedOrigins": origins,
                    "devicePolicy": policy,
                    "maxDevices": max_devices,
                    "defaultTtl": default_ttl,
                },
                [],
            )
        ),
    )


def user_paths() -> Schema:
    users = {"type": "array", "items": ref("User")}
    user_list = operation(
        "userList",
        "user",
        "List online connections",
        "Returns one `User` per online connection of the tenant, ordered by `userId`, "
        "then `appPlatform`.",
        "tenant",
        success(
            "A page of connections.",
            object_schema(
                {"total": integer("All online connections of the tenant."), "users": users}
            ),
        ),
        (400, *TENANT_ERRORS),
        parameters=[
            query("page", integer("Page number.", minimum=1, maximum=PAGE_MAX, default=1)),
            query("size", integer("Page size.", minimum=1, maximum=LIST_SIZE_MAX, default=100)),
        ],
    )
    online = operation(
        "userOnline",
        "user",
        "Check whether a user is online",
        "Returns the user's live connections. The user need not exist.",
        "tenant",
        success(
            "The user's presence.",
            object_schema(
                {
                    "userId": identifier("User id."),
                    "online": boolean(),
                    "devices": {**users, "description": "One per connection."},
                }
            ),
        ),
        (400, 413, *TENANT_ERRORS),
        request_body=body(object_schema({"userId": identifier("User id.")})),
    )
    user_maps = operation(
        "listUserMaps",
        "user",
        "List online connections by edge node",
        "Returns the tenant's online connections grouped by the edge node that holds them.",
        "tenant",
        success(
            "Edge node id to the connections on that node.",
            {"type": "object", "additionalProperties": users},
        ),
        TENANT_ERRORS,
    )
    return {
        "/user/list": {"get": user_list},
        "/user/online": {"post": online},
        "/user/listUserMaps": {"get": user_maps},
    }


def msg_paths() -> Schema:
    send = operation(
        "sendMsg",
        "msg",
        "Send a message",
        "Sends a message from a user of the tenant (who need not be online) to one user, or "
        "with `all: true` to every online connection of the tenant. A one-to-one message is "
        "stored on the timelines of both users (once for a message to oneself). A broadcast is "
        "stored once in the tenant's broadcast history. A `clientMsgId` used before by the same "
        "sender stores nothing and returns the original reply. `persist: false` pushes to the "
        "connections online now and stores nothing (`seq` 0).",
        "tenant",
        success(
            "The accepted message.",
            object_schema(
                {
                    "msgId": string(),
                    "seq": integer(
                        "The sender's seq. 0 for a broadcast or an online-only message.", minimum=0
                    ),
                    "broadcastSeq": integer(
                        "Position in the broadcast history. Only with `all: true`.", minimum=0
                    ),
                    "time": timestamp("Time the message was accepted."),
                    "delivered": integer("Connections reached now.", minimum=0),
                },
                ["msgId", "seq", "time", "delivered"],
            ),
        ),
        (400, 413, *TENANT_ERRORS),
        request_body=body(
            object_schema(
                {
                    "from": identifier("Sender, a user id of the tenant."),
                    "to": identifier(
                        "Recipient. Required unless `all` is true, and ignored if it is."
                    ),
                    "all": boolean(
                        "Broadcast to every online connection of the tenant.", default=False
                    ),
                    "message": string(
                        "Text, which may be empty. At most the edge's `max_message_bytes` of "
                        "UTF-8 (65,536 by default), else 413 / 1011.",
                    ),
                    "msgType": string(enum=list(ids.MSG_TYPES), default="info"),
                    "msgContType": string(enum=list(ids.MSG_CONT_TYPES), default="text"),
                    "clientMsgId": string(
                        "Idempotency key, unique per tenant and sender for at least 24 hours.",
                        maxLength=CLIENT_MSG_ID_MAX_CHARS,
                    ),
                    "persist": boolean(
                        "Store the message. `false` makes it online-only.", default=True
                    ),
                },
                ["from", "message"],
            )
        ),
    )
    get_msg = operation(
        "getMsg",
        "msg",
        "Page through a conversation",
        "Returns the messages between `userId` and `peerId` by `userId`'s seq. With no cursor, the "
        "newest `limit`. Pages are always ascending.",
        "tenant",
        success("A page of messages.", ref("MessagePage")),
        (400, *TENANT_ERRORS),
        parameters=[
            query("userId", identifier("The user whose timeline is read."), required=True),
            query("peerId", identifier("The other user of the conversation."), required=True),
            *history_cursors(),
        ],
    )
    get_broadcast = operation(
        "getBroadcast",
        "msg",
        "Page through the tenant's broadcasts",
        "Returns broadcasts by `broadcastSeq`, with the same cursors as `getMsg`. "
        "Pages are always ascending.",
        "tenant",
        success("A page of broadcasts.", ref("MessagePage")),
        (400, *TENANT_ERRORS),
        parameters=history_cursors(),
    )
    return {
        "/msg/sendMsg": {"post": send},
        "/msg/getMsg": {"get": get_msg},
        "/msg/getBroadcast": {"get": get_broadcast},
    }


def system_state_data() -> Schema:
    edge = object_schema(
        {
            "nodeId": string(),
            "grpcAddr": string(),
            "httpAddr": string(),
            "startedAt": timestamp("Start time."),
        }
    )
    details = object_schema(
        {
            "nodeId": string("Id of this edge node."),
            "startedAt": timestamp("Start time of this edge node."),
            "tenantsOnline": integer("Tenants with a connection on this edge node."),
            "edges": {"type": "array", "items": edge, "description": "Edge nodes alive."},
        },
        description="Only for the operator.",
    )
    return object_schema(
        {
            "status": string(enum=["ok", "degraded", "draining"]),
            "version": string(),
            "connections": integer("Connections on this edge node."),
            "edgesAlive": {
                "type": ["integer", "null"],
                "description": "Edge nodes alive, null when presence is unreachable.",
            },
            "details": details,
        },
        ["status", "version", "connections", "edgesAlive"],
    )


def system_paths() -> Schema:
    state = operation(
        "systemState",
        "system",
        "Get the platform state",
        "Returns the status, version and counts. The operator's bearer token adds `details`. "
        "No token appears in the reply.",
        "anyone",
        success("The state.", system_state_data()),
        (500,),
    )
    state["security"] = ANYONE_OR_OPERATOR
    healthz = operation(
        "healthz",
        "system",
        "Liveness check",
        "Returns 200 while the process serves HTTP.",
        "anyone",
        success("Alive.", object_schema({"status": string(const="alive")})),
        (500,),
    )
    readyz = operation(
        "readyz",
        "system",
        "Readiness check",
        "Returns 200 when auth, presence and router are reachable and the node is not "
        "draining, else 503.",
        "anyone",
        success("Ready.", object_schema({"status": string(const="ready")})),
        (500, 503),
    )
    metrics = operation(
        "metrics",
        "system",
        "Prometheus metrics",
        "Returns the metrics in the Prometheus text exposition format.",
        "anyone",
        {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
        (500,),
    )
    openapi = operation(
        "openapi",
        "system",
        "This OpenAPI schema",
        "Returns this schema as JSON, without the reply envelope. `/docs` shows it in Swagger UI.",
        "anyone",
        {
            "description": "The schema.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        (500,),
    )
    return {
        "/system/state": {"get": state},
        "/healthz": {"get": healthz},
        "/readyz": {"get": readyz},
        "/metrics": {"get": metrics},
        "/openapi.json": {"get": openapi},
    }


DESCRIPTION = f"""\
REST API of a prim edge node, for tenant backends and the operator.

Every reply is `{{"code": int, "msg": str, "data": any}}`. Success is HTTP 200 with `code` 200 and
`msg` `ok`. An error has the matching HTTP status and a code from the `Error` schema. Ids
(`account`, `userId`, `appPlatform`, ...) are case-sensitive, 1-64 letters, digits or `._-@`.
Times are milliseconds since the Unix epoch. POST routes take a JSON object or a form with the
same fields.

## WebSocket `/acc`

End users connect to `/acc` with a token from `getToken`, either as `?token=` or in a first
`login` frame within 10 seconds. A client frame is `{{"seq": str, "cmd": str, "data": object}}`,
and the reply echoes `seq` and `cmd` with `"response": {{"code", "codeMsg", "data"}}`.
Before login only `login` and `ping` are accepted.

| cmd | data | reply data |
|---|---|---|
| `login` | `token`, optional `deviceInfo`, `qua`, `address` (strings) | the connection's `User` |
| `heartbeat` | - | `heartbeatTime`. Send it every 30 seconds. |
| `ping` | - | `"pong"` |
| `msg` | `to`, `message`, optional `msgType`, `msgContType`, `clientMsgId`, `persist` | `msgId`, `seq`, `time` |
| `sync` | `afterSeq` (0 for everything), optional `limit` (1-{SYNC_LIMIT_MAX}, default 100) | `messages`, `hasMore` |
| `syncBroadcast` | `afterSeq` (the last `broadcastSeq` held, 0 for everything), optional `limit` \
(1-{BROADCAST_SYNC_LIMIT_MAX}, default 50) | `messages`, `hasMore`: the tenant's stored broadcasts |
| `exit` | - | none. The connection closes with code 1000. |

Pushes have an empty `seq`: `msg` (a `Message`), `kick` (`{{"reason": "replaced" | "revoked" |
"expired"}}`, then close code 4001) and `reconnect` (the edge is shutting down, close code 1012).
"""


SCHEMA: Schema = {
    "openapi": "3.1.0",
    "info": {"title": "prim", "version": __version__, "description": DESCRIPTION},
    "tags": [
        {"name": "sysClient", "description": "Tenants and user tokens."},
        {"name": "user", "description": "Presence of the tenant's users."},
        {"name": "msg", "description": "Sending and message history."},
        {"name": "system", "description": "State, health, metrics and this schema."},
    ],
    "paths": {**sys_client_paths(), **user_paths(), **msg_paths(), **system_paths()},
    "components": components(),
}
