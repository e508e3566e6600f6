"""Property-based fuzzing: the frame parser, every REST route's input, and the OpenAPI schema.

The frame parser runs in process. The REST and schemathesis fuzzing run
against the shared suite with a bounded number of examples per route. No
input may produce a 5xx reply or a reply outside the ``{code, msg, data}``
envelope.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tracemalloc
from pathlib import Path

import httpx
import msgspec
import pytest
from helpers import edge_url, unique
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prim.edge.app import ROUTES
from prim.edge.frames import FrameError, parse_request
from prim.errors import invalid
from prim.edge.openapi import SCHEMA
from starlette.routing import Route

REST_EXAMPLES = 60
# Routes whose reply is not the {code, msg, data} envelope.
NO_ENVELOPE_PATHS = ("/metrics", "/openapi.json")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


# The frame parser


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_parse_request_raw_input(raw):
    try:
        frame_seq, cmd, data = parse_request(raw)
    except FrameError as exc:
        assert exc.code == 1001
        assert isinstance(exc.frame_seq, str)
        assert isinstance(exc.cmd, str)
        return
    assert isinstance(frame_seq, str)
    assert isinstance(cmd, str)
    assert isinstance(data, dict)


@given(
    st.dictionaries(
        st.sampled_from(["seq", "cmd", "data", "extra"]) | st.text(max_size=5),
        json_values,
        max_size=5,
    )
)
def test_parse_request_any_object(frame):
    raw = msgspec.json.encode(frame)
    try:
        frame_seq, cmd, data = parse_request(raw)
    except FrameError as exc:
        assert exc.code == 1001
        # A readable seq is echoed back.
        if isinstance(frame.get("seq"), str):
            assert exc.frame_seq in ("", frame["seq"])
        return
    # A null seq is an absent one.
    expected_seq = frame.get("seq")
    assert frame_seq == ("" if expected_seq is None else expected_seq)
    assert cmd == frame["cmd"]
    assert data == (frame.get("data") or {})


@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_parse_request_valid_frames(frame_seq, cmd, data):
    raw = msgspec.json.encode({"seq": frame_seq, "cmd": cmd, "data": data})
    assert parse_request(raw) == (frame_seq, cmd, data)
    assert parse_request(raw.decode()) == (frame_seq, cmd, data)


SURROGATE_FRAMES = [
    # (raw frame, field named, seq echoed, cmd echoed)
    (rb'{"seq": "1", "cmd": "msg", "data": {"message": "a\ud800"}}', "message", "1", "msg"),
    (rb'{"seq": "2", "cmd": "msg", "data": {"a": [1, {"b": "\udc00"}]}}', "a[1].b", "2", "msg"),
    (rb'{"seq": "\ud800", "cmd": "ping"}', "seq", "", "ping"),
    (rb'["\ud800"]', "frame[0]", "", ""),
]


@pytest.mark.parametrize("raw,field,frame_seq,cmd", SURROGATE_FRAMES)
def test_lone_surrogate_named(raw, field, frame_seq, cmd):
    with pytest.raises(FrameError) as caught:
        parse_request(raw)
    assert caught.value.msg.startswith(f"invalid {field}: not valid UTF-8")
    assert caught.value.frame_seq == frame_seq
    assert caught.value.cmd == cmd


HUGE_NUMBER_FRAMES = [
    # (raw frame, the whole error message)
    (
        rb'{"seq": "1", "cmd": "sync", "data": {"afterSeq": -1E400}}',
        "invalid afterSeq -1E400: number out of range",
    ),
    (
        b'{"seq": "2", "cmd": "sync", "data": {"afterSeq": -' + b"9" * 4300 + b"}}",
        "invalid afterSeq -" + "9" * 99 + "... (4301 characters): number out of range",
    ),
    # A repeated key: the first value is the one msgspec rejected.
    (
        rb'{"seq": "3", "cmd": "sync", "data": {"afterSeq": 1e400, "afterSeq": 0}}',
        "invalid afterSeq 1e400: number out of range",
    ),
    # Under a secret field, the path without the value.
    (
        rb'{"seq": "4", "cmd": "login", "data": {"token": {"a": [1e999]}}}',
        "invalid token.a[0]: number out of range",
    ),
    (rb'[1, {"x": 1e400}]', "invalid frame[1].x 1e400: number out of range"),
]


@pytest.mark.parametrize("raw,message", HUGE_NUMBER_FRAMES)
def test_huge_number_named(raw, message):
    with pytest.raises(FrameError) as caught:
        parse_request(raw)
    assert caught.value.msg == message


def test_fault_path_cut_in_linear_memory():
    """Search a 60 KB frame whose long key leads to a long list, within a few MB."""
    raw = '{"' + "k" * 30_000 + '": [' + "0," * 15_000 + "1e400]}"
    tracemalloc.start()
    try:
        with pytest.raises(FrameError) as caught:
            parse_request(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = "invalid " + "k" * 100 + "... (30007 characters) 1e400: number out of range"
    assert caught.value.msg == expected
    # Spelling out every path during the search would hold 30,000 characters for each
    # of 15,000 entries, about 450 MB (an estimate).
    assert peak < 20 * 1024 * 1024


def test_deep_frame_nested_too_deeply():
    with pytest.raises(FrameError) as caught:
        parse_request("[" * 5000 + "]" * 5000)
    assert caught.value.msg == "invalid frame: nested too deeply"


def test_too_deep_value_shown_short():
    """Name a list nested past repr's recursion limit in a short form."""
    value: list = []
    inner = value
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    assert invalid("userId", value, "must be a string").msg == (
        "invalid userId [[[[...]]]]: must be a string"
    )


def test_nan_frame_is_not_json():
    with pytest.raises(FrameError, match="not JSON"):
        parse_request(b'{"seq": "1", "cmd": "msg", "data": {"n": NaN}}')


# Every REST route, against the running suite


def fuzz_routes() -> list[tuple[str, str]]:
    routes = []
    for route in ROUTES:
        if isinstance(route, Route) and route.include_in_schema:
            routes.extend((method, route.path) for method in sorted(route.methods - {"HEAD"}))
    return routes


def schema_fields(method: str, path: str) -> list[str]:
    """Field names the schema gives the route's body or query."""
    operation = SCHEMA["paths"].get(path, {}).get(method.lower(), {})
    names = [parameter["name"] for parameter in operation.get("parameters", [])]
    content = operation.get("requestBody", {}).get("content", {})
    properties = content.get("application/json", {}).get("schema", {}).get("properties", {})
    return names + list(properties)


def is_operator_route(method: str, path: str) -> bool:
    operation = SCHEMA["paths"].get(path, {}).get(method.lower(), {})
    return operation.get("security") == [{"operator": []}]


@pytest.fixture(scope="module")
def fuzz_tenant(cluster):
    account, password = unique("fuzz"), "pw-" + secrets.token_hex(8)
    with httpx.Client(
        base_url=edge_url(cluster, 0), headers={"Authorization": f"Bearer {cluster.admin_token}"}
    ) as operator:
        response = operator.post(
            "/sysClient/createSysClient", json={"account": account, "password": password}
        )
        assert response.status_code == 200, response.text
    return account, password


def check_envelope(response: httpx.Response, label: str) -> None:
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
    if label.endswith(NO_ENVELOPE_PATHS):
        return
    body = response.json()
    assert set(body) == {"code", "msg", "data"}, f"{label}: {response.text[:300]}"
    assert isinstance(body["code"], int)
    assert (body["code"] == 200) == (response.status_code == 200), f"{label}: {body}"


@pytest.mark.integration
@pytest.mark.parametrize("route", fuzz_routes(), ids=lambda r: f"{r[0]} {r[1]}")
def test_rest_inputs_never_5xx(cluster, fuzz_tenant, route):
    method, path = route
    names = schema_fields(method, path)
    keys = st.sampled_from(names) | st.text(max_size=8) if names else st.text(max_size=8)
    headers = {}
    auth = None
    if is_operator_route(method, path):
        headers["Authorization"] = f"Bearer {cluster.admin_token}"
    else:
        auth = fuzz_tenant
    client = httpx.Client(base_url=edge_url(cluster, 1), auth=auth, headers=headers, timeout=30)

    @settings(
        max_examples=REST_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        st.dictionaries(keys, json_values, max_size=6),
        st.sampled_from(["json", "form", "raw"]),
        st.binary(max_size=200),
    )
    def run(fields, encoding, raw):
        label = f"{method} {path}"
        if method == "GET":
            query = {key: str(value) for key, value in fields.items()}
            check_envelope(client.get(path, params=query), label)
        elif encoding == "json":
            check_envelope(client.request(method, path, json=fields), label)
        elif encoding == "form":
            form = {key: str(value) for key, value in fields.items()}
            check_envelope(client.request(method, path, data=form), label)
        else:
            response = client.request(
                method, path, content=raw, headers={"content-type": "application/json"}
            )
            check_envelope(response, label)

    with client:
        run()


# schemathesis, from /openapi.json


@pytest.mark.integration
def test_schemathesis_finds_no_server_error(cluster, fuzz_tenant, tmp_path):
    account, password = fuzz_tenant
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{edge_url(cluster, 0)}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        "5",
        "--workers",
        "1",
        "--seed",
        "1",
        "--request-timeout",
        "30",
        "--auth",
        f"{account}:{password}",
        "--no-color",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    served = httpx.get(f"{edge_url(cluster, 0)}/openapi.json").json()
    # schemathesis (4.32) leaves out the operation that serves the schema itself.
    operations = sum(len(item) for path, item in served["paths"].items() if path != "/openapi.json")
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested is not None, result.stdout[-3000:]
    assert int(tested.group(1)) == operations, result.stdout[-4000:]
