"""The hand-written OpenAPI schema: valid OpenAPI 3.1 and in step with the routes."""

from __future__ import annotations

import msgspec
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.routing import Route

from prim.edge.app import ROUTES
from prim.edge.frames import user_dict
from prim.edge.openapi import SCHEMA
from prim.edge.session import HANDLERS
from prim.messages import wire_message
from prim.pb import common_pb2

UNDOCUMENTED_PATHS = {"/docs"}
OPERATOR_ONLY_PATHS = {"/sysClient/createSysClient", "/sysClient/listSysClients"}
OPERATOR_OR_TENANT_PATHS = {"/sysClient/getSysClient"}
PUBLIC_PATHS = {"/system/state", "/healthz", "/readyz", "/metrics", "/openapi.json"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def route_methods() -> dict[str, set[str]]:
    """Map each documented HTTP route path to its methods, without Starlette's implicit HEAD."""
    routes = {}
    for route in ROUTES:
        if not isinstance(route, Route) or route.path in UNDOCUMENTED_PATHS:
            continue
        if not route.include_in_schema:  # web pages such as the console, not API routes
            continue
        routes[route.path] = {method.lower() for method in route.methods if method != "HEAD"}
    return routes


def operations() -> list[tuple[str, str, dict]]:
    return [
        (path, method, operation)
        for path, item in SCHEMA["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_schema_is_valid_openapi_31():
    assert SCHEMA["openapi"].startswith("3.1")
    validate(SCHEMA, cls=OpenAPIV31SpecValidator)


def test_schema_encodes_as_json():
    decoded = msgspec.json.decode(msgspec.json.encode(SCHEMA))
    assert decoded == SCHEMA


def test_every_route_is_documented():
    documented = SCHEMA["paths"]
    for path, methods in route_methods().items():
        assert path in documented, f"route {path} is missing from the OpenAPI schema"
        assert set(documented[path]) & HTTP_METHODS == methods, f"methods of {path} differ"


def test_every_schema_path_is_a_route():
    routes = route_methods()
    for path in SCHEMA["paths"]:
        assert path in routes, f"schema path {path} is not an HTTP route in app.ROUTES"


def test_websocket_and_docs_not_paths():
    assert "/acc" not in SCHEMA["paths"]
    assert "/docs" not in SCHEMA["paths"]
    assert "/docs/static" not in SCHEMA["paths"]
    assert "/acc" in SCHEMA["info"]["description"]


def test_every_frame_command_documented():
    description = SCHEMA["info"]["description"]
    for cmd in HANDLERS:
        assert f"| `{cmd}` |" in description, f"frame command {cmd} is not in the WebSocket table"


@pytest.mark.parametrize(
    "path,method,operation", operations(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_operation_has_error_response(path, method, operation):
    statuses = [int(status) for status in operation["responses"] if status != "default"]
    assert 200 in statuses
    assert any(status >= 400 for status in statuses), (
        f"{method.upper()} {path} documents no error response"
    )


@pytest.mark.parametrize(
    "path,method,operation", operations(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_operation_security_matches_caller(path, method, operation):
    assert "security" in operation, f"{method.upper()} {path} has no security entry"
    security = operation["security"]
    if path in OPERATOR_ONLY_PATHS:
        assert security == [{"operator": []}]
    elif path in OPERATOR_OR_TENANT_PATHS:
        assert {"operator": []} in security
        assert {"tenant": []} in security
        assert {} not in security
    elif path in PUBLIC_PATHS:
        assert security == [] or {} in security, (
            f"{method.upper()} {path} must allow anonymous calls"
        )
        assert {"tenant": []} not in security
    else:
        assert security == [{"tenant": []}]


def test_no_global_security():
    assert "security" not in SCHEMA


def test_security_schemes():
    schemes = SCHEMA["components"]["securitySchemes"]
    assert schemes["operator"]["type"] == "http"
    assert schemes["operator"]["scheme"] == "bearer"
    assert schemes["tenant"]["type"] == "http"
    assert schemes["tenant"]["scheme"] == "basic"


def test_error_statuses_documented():
    documented = {status for _, _, operation in operations() for status in operation["responses"]}
    for status in ("400", "401", "403", "404", "409", "413", "429", "503"):
        assert status in documented, f"no operation documents status {status}"


def test_error_responses_use_error_envelope():
    error_ref = {"$ref": "#/components/schemas/Error"}
    for name, response in SCHEMA["components"]["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert schema == error_ref, f"response {name} is not the Error envelope"
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert "$ref" in response, (
                    f"{method.upper()} {path} {status} is not a shared response"
                )


def test_post_bodies_accept_json_and_form():
    for path, method, operation in operations():
        if method != "post":
            continue
        content = operation["requestBody"]["content"]
        assert content["application/json"] == content["application/x-www-form-urlencoded"], path


def test_user_schema_matches_user_dict():
    fields = set(user_dict(common_pb2.User()))
    assert set(SCHEMA["components"]["schemas"]["User"]["properties"]) == fields


def test_message_schema_matches_wire_message():
    message = wire_message(
        msg_id="m1",
        seq=1,
        time=1,
        sender={"userId": "u1", "nickname": "", "avatar": ""},
        to="u2",
        message="hi",
        msg_type="info",
        msg_cont_type="text",
        client_msg_id="",
        broadcast_seq=1,
    )
    schema = SCHEMA["components"]["schemas"]["Message"]
    assert set(schema["properties"]) == set(message)
    assert set(schema["properties"]["from"]["properties"]) == set(message["from"])
    assert "broadcastSeq" not in schema["required"]
