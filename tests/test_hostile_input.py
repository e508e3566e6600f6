"""Hostile input: bad frames, oversized WebSocket messages and invalid REST fields.

The first tests drive the sans-I/O frame parser of the edge without sockets;
the rest run against the whole suite.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
import websockets
from helpers import connect_user, edge_url, new_tenant, next_msg, unique, ws_url
from prim.edge.ws_protocol import LimitedServerProtocol, OversizedMessage
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from prim.client import ApiError, UserConnection

LIMIT = 65536  # PRIM_MAX_MESSAGE_BYTES default, which the test cluster keeps


def wire(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


def parser(max_size: int = 100) -> LimitedServerProtocol:
    return LimitedServerProtocol(max_size=max_size, state=State.OPEN)


# The frame parser, without sockets


def test_parser_passes_message_at_limit():
    protocol = parser()
    protocol.receive_data(wire(Opcode.TEXT, b"x" * 100))
    [event] = protocol.events_received()
    assert isinstance(event, Frame)
    assert event.data == b"x" * 100
    assert protocol.parser_exc is None


def test_parser_discards_single_oversized_frame():
    protocol = parser()
    protocol.receive_data(wire(Opcode.TEXT, b"x" * 101))
    assert protocol.events_received() == [OversizedMessage(101)]
    protocol.receive_data(wire(Opcode.TEXT, b"next"))
    [event] = protocol.events_received()
    assert event.data == b"next"
    assert protocol.parser_exc is None


def test_parser_discards_fragments_past_limit():
    protocol = parser()
    protocol.receive_data(wire(Opcode.TEXT, b"a" * 60, fin=False))
    protocol.receive_data(wire(Opcode.CONT, b"b" * 60, fin=False))
    protocol.receive_data(wire(Opcode.PING, b"p"))
    protocol.receive_data(wire(Opcode.CONT, b"c" * 5, fin=True))
    events = protocol.events_received()
    assert events[0].opcode is Opcode.TEXT
    assert events[1].opcode is Opcode.PING
    assert events[2] == OversizedMessage(125)
    assert protocol.data_to_send() == [wire_pong(b"p")]
    protocol.receive_data(wire(Opcode.BINARY, b"ok"))
    assert protocol.events_received()[0].data == b"ok"


def wire_pong(data: bytes) -> bytes:
    return Frame(Opcode.PONG, data).serialize(mask=False)


def test_parser_buffers_one_read_at_most():
    protocol = parser(max_size=LIMIT)
    message = wire(Opcode.BINARY, os.urandom(8 * 1024 * 1024))
    chunk = 64 * 1024
    for start in range(0, len(message), chunk):
        protocol.receive_data(message[start : start + chunk])
        assert len(protocol.reader.buffer) <= chunk
    assert protocol.events_received() == [OversizedMessage(8 * 1024 * 1024)]


def test_parser_many_small_fragments_discarded():
    protocol = parser(max_size=LIMIT)
    protocol.receive_data(wire(Opcode.TEXT, b"x" * 1000, fin=False))
    for _ in range(200):
        protocol.receive_data(wire(Opcode.CONT, b"x" * 1000, fin=False))
    protocol.receive_data(wire(Opcode.CONT, b"", fin=True))
    events = protocol.events_received()
    assert events[-1] == OversizedMessage(201_000)
    buffered = sum(len(e.data) for e in events if isinstance(e, Frame))
    assert buffered <= LIMIT


def test_parser_close_inside_oversized_fails():
    protocol = parser()
    protocol.receive_data(wire(Opcode.TEXT, b"x" * 200, fin=False))
    protocol.receive_data(Frame(Opcode.CLOSE, b"\x03\xe8").serialize(mask=True))
    assert protocol.parser_exc is not None
    assert protocol.close_sent.code == 1002


def test_parser_stray_continuation_fails():
    protocol = parser()
    protocol.receive_data(wire(Opcode.CONT, b"x" * 200))
    assert protocol.close_sent.code == 1002


def test_parser_long_control_frame_fails():
    protocol = parser()
    header = bytes([0x89, 0x80 | 127]) + (10**9).to_bytes(8, "big") + b"\0\0\0\0"
    protocol.receive_data(header)
    assert protocol.close_sent.code == 1002
    assert len(protocol.reader.buffer) == 0 or protocol.parser_exc is not None


# WebSocket frames, end to end


@pytest.fixture
async def acme(cluster):
    client = await new_tenant(cluster, unique("acme"))
    yield client
    await client.close()


async def chat(u2: UserConnection, u3: UserConnection, rounds: int) -> list[str]:
    """Send messages between u2 and u3, each checked on arrival; return what u3 got."""
    received = []
    for i in range(rounds):
        await u2.send("u3", f"hello {i}")
        received.append((await next_msg(u3, 10.0))["message"])
        await u3.send("u2", f"back {i}")
        assert (await next_msg(u2, 10.0))["message"] == f"back {i}"
        await asyncio.sleep(0.02)
    return received


async def error_reply(conn: UserConnection, timeout: float = 10.0) -> dict:
    frame = await conn.next_push(timeout)
    assert frame["response"]["code"] != 200, frame
    return frame


@pytest.mark.integration
async def test_bad_frames_leave_others_untouched(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 0)
    u3 = await connect_user(cluster, acme, "u3", 1)
    try:
        chatting = asyncio.create_task(chat(u2, u3, 10))

        await u1.ws.send("not json {")
        reply = await error_reply(u1)
        assert (reply["seq"], reply["response"]["code"]) == ("", 1001)
        assert "not JSON" in reply["response"]["codeMsg"]

        await u1.ws.send('[1, 2, "three"]')
        reply = await error_reply(u1)
        assert (reply["seq"], reply["response"]["code"]) == ("", 1001)
        assert "list" in reply["response"]["codeMsg"]

        await u1.ws.send('{"seq": "s3", "cmd": "teleport", "data": {}}')
        reply = await error_reply(u1)
        assert (reply["seq"], reply["cmd"], reply["response"]["code"]) == ("s3", "teleport", 1010)
        assert "teleport" in reply["response"]["codeMsg"]

        await u1.ws.send('{"seq": "s4", "cmd": "msg", "data": {"to": 12345, "message": "x"}}')
        reply = await error_reply(u1)
        assert (reply["seq"], reply["response"]["code"]) == ("s4", 1002)
        assert "to" in reply["response"]["codeMsg"]
        assert "12345" in reply["response"]["codeMsg"]

        await u1.ws.send('{"seq": 9, "cmd": "ping"}')
        reply = await error_reply(u1)
        assert reply["response"]["code"] == 1001
        assert "seq" in reply["response"]["codeMsg"]

        await u1.ws.send(b'{"seq": "s6", "cmd": "msg", "data": "text"}')
        reply = await error_reply(u1)
        assert (reply["seq"], reply["response"]["code"]) == ("s6", 1001)

        # Half a surrogate pair is valid JSON, but UTF-8 cannot encode it.
        await u1.ws.send('{"seq": "s7", "cmd": "msg", "data": {"to": "u2", "message": "a\\ud800"}}')
        reply = await error_reply(u1)
        assert reply["seq"] == "s7"
        assert reply["cmd"] == "msg"
        assert reply["response"]["code"] == 1001
        assert "invalid message" in reply["response"]["codeMsg"]

        # u1 is still usable.
        assert await u1.request("ping") == "pong"
        sent = await u1.send("u4", "after the bad frames")
        assert sent["seq"] >= 1

        received = await chatting
        assert received == [f"hello {i}" for i in range(10)]
        assert u2.pushes.empty()
        assert u3.pushes.empty()
    finally:
        await asyncio.gather(u1.close(), u2.close(), u3.close())


FRAME_CASES = [
    # (data of a msg request, expected code, words the message must contain)
    ({"to": "a b", "message": "x"}, 1002, ["to", "'a b'"]),
    ({"to": "u2", "message": 7}, 1001, ["message", "7"]),
    ({"to": "u2"}, 1001, ["missing message"]),
    ({"message": "x", "to": None}, 1002, ["missing to"]),
    ({"to": "u2", "message": "x", "msgType": "shout"}, 1001, ["msgType", "shout"]),
    ({"to": "u2", "message": "x", "msgContType": 3}, 1001, ["msgContType", "3"]),
    ({"to": "u2", "message": "x", "persist": "yes"}, 1001, ["persist", "yes"]),
    ({"to": "u2", "message": "x", "clientMsgId": "c" * 200}, 1001, ["clientMsgId"]),
    # The same empty values as in REST_CASES get the same codes.
    ({"to": "", "message": "x"}, 1002, ["to", "''"]),
    ({"message": "x"}, 1002, ["missing to"]),
    ({"to": "u2", "message": "x", "msgType": ""}, 1001, ["msgType", "''"]),
    ({"to": "u2", "message": "x", "msgContType": ""}, 1001, ["msgContType", "''"]),
    ({"to": "u2", "message": "x", "msgType": 5}, 1001, ["invalid msgType 5: must be one of"]),
]

SYNC_CASES = [
    ({}, 1001, ["missing afterSeq", "0"]),
    ({"afterSeq": -1}, 1001, ["afterSeq", "-1"]),
    ({"afterSeq": "0"}, 1001, ["afterSeq", "'0'"]),
    ({"afterSeq": 0, "limit": 0}, 1001, ["limit", "0"]),
    ({"afterSeq": 0, "limit": 501}, 1001, ["limit", "501"]),
    # Past protobuf's int64: named, not a server error.
    ({"afterSeq": 2**64}, 1001, ["afterSeq", str(2**64)]),
    ({"afterSeq": None}, 1001, ["missing afterSeq", "0"]),
    ({"afterSeq": 0, "limit": "5"}, 1001, ["limit", "'5'"]),
]


@pytest.mark.integration
async def test_invalid_frame_fields_named(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 1)
    try:
        for cmd, cases in (("msg", FRAME_CASES), ("sync", SYNC_CASES)):
            for data, code, words in cases:
                with pytest.raises(ApiError) as failure:
                    await u1.request(cmd, data)
                assert failure.value.code == code, (cmd, data, failure.value.msg)
                for word in words:
                    assert word in failure.value.msg, (cmd, data, failure.value.msg)
        with pytest.raises(ApiError) as failure:
            await u1.request("login", {"token": u1.token})
        assert failure.value.code == 1009
        assert u1.token not in failure.value.msg
        assert await u1.request("ping") == "pong"
    finally:
        await u1.close()


@pytest.mark.integration
async def test_login_errors_never_echo_token(cluster):
    conn = await UserConnection.connect(ws_url(cluster, 0))
    secret = "s3cret-" + "z" * 40
    with pytest.raises(ApiError) as failure:
        await conn.request("login", {"token": secret})
    assert failure.value.code == 1003
    assert secret not in failure.value.msg
    assert await conn.wait_closed() == 4001

    conn = await UserConnection.connect(ws_url(cluster, 0))
    with pytest.raises(ApiError) as failure:
        await conn.request("login", {"token": 12345})
    assert failure.value.code == 1003
    assert await conn.wait_closed() == 4001


@pytest.mark.integration
async def test_invalid_utf8_closes_1007(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    try:
        # websockets sends str as text; write raw bytes into a text frame instead.
        await u1.ws.send(b"\xff\xfe not utf-8", text=True)
        assert await u1.wait_closed() == 1007
    finally:
        await u1.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.integration
async def test_oversized_messages_rejected_then_closed(cluster, acme):
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 0)
    u3 = await connect_user(cluster, acme, "u3", 1)
    try:
        chatting = asyncio.create_task(chat(u2, u3, 10))

        # One WebSocket frame over the limit.
        await u1.ws.send("x" * (LIMIT + 1))
        reply = await error_reply(u1)
        assert reply["response"]["code"] == 1011
        assert f"{LIMIT + 1} bytes" in reply["response"]["codeMsg"]
        assert str(LIMIT) in reply["response"]["codeMsg"]
        assert await u1.request("ping") == "pong"

        # The same size in 1,000-byte continuation frames.
        pieces = ["y" * 1000] * ((LIMIT // 1000) + 1)
        await u1.ws.send(iter(pieces))
        reply = await error_reply(u1)
        assert reply["response"]["code"] == 1011
        assert await u1.request("ping") == "pong"
        # A message of exactly the limit is still read and answered.
        head = '{"seq": "big", "cmd": "ping", "pad": "'
        at_limit = head + "p" * (LIMIT - len(head) - 2) + '"}'
        assert len(at_limit) == LIMIT
        await u1.ws.send(at_limit)
        reply = await u1.next_push()
        assert (reply["seq"], reply["response"]["data"]) == ("big", "pong")

        # The third oversized message within a minute closes with 1009.
        await u1.ws.send("z" * (LIMIT * 4))
        reply = await error_reply(u1)
        assert reply["response"]["code"] == 1011
        assert await u1.wait_closed(10.0) == 1009

        assert await chatting == [f"hello {i}" for i in range(10)]
        assert u2.pushes.empty()
        assert u3.pushes.empty()
    finally:
        await asyncio.gather(u1.close(), u2.close(), u3.close())


@pytest.mark.integration
async def test_oversized_fragments_not_buffered(cluster, acme):
    """32 MiB in 64 KiB fragments raise the edge's memory by far less than 32 MiB."""
    edge_pid = cluster.processes["edge1"].proc.pid
    u1 = await connect_user(cluster, acme, "u1", 0)
    try:
        before = rss_bytes(edge_pid)
        piece = "f" * (64 * 1024)
        await u1.ws.send(iter([piece] * 512))
        reply = await error_reply(u1, 30.0)
        assert reply["response"]["code"] == 1011
        assert f"{512 * 64 * 1024} bytes" in reply["response"]["codeMsg"]
        grown = rss_bytes(edge_pid) - before
        assert grown < 8 * 1024 * 1024, f"edge RSS grew by {grown} bytes"
        assert await u1.request("ping") == "pong"
    finally:
        await u1.close()


# REST fields


REST_CASES = [
    # (method, path, body or query, expected HTTP status, code, words in msg)
    ("POST", "/sysClient/getToken", {"userId": "a b"}, 400, 1002, ["userId", "'a b'"]),
    ("POST", "/sysClient/getToken", {"userId": "x" * 65}, 400, 1002, ["userId"]),
    ("POST", "/sysClient/getToken", {"userId": 5}, 400, 1002, ["userId", "5"]),
    # A long invalid value is cut in the message.
    (
        "POST",
        "/sysClient/getToken",
        {"userId": "a" * 5000},
        400,
        1002,
        ["userId", "(5002 characters)"],
    ),
    (
        "POST",
        "/sysClient/getToken",
        {"userId": "u1", "appPlatform": "tv"},
        400,
        1001,
        ["appPlatform", "tv"],
    ),
    ("POST", "/sysClient/getToken", {"userId": "u1", "ttl": 5}, 400, 1001, ["ttl", "5"]),
    (
        "POST",
        "/sysClient/getToken",
        {"userId": "u1", "ttl": 2592001},
        400,
        1001,
        ["ttl", "2592001"],
    ),
    ("POST", "/sysClient/getToken", {"userId": "u1", "ttl": "soon"}, 400, 1001, ["ttl", "soon"]),
    (
        "POST",
        "/sysClient/getToken",
        {"userId": "u1", "nickname": "n" * 300},
        400,
        1001,
        ["nickname"],
    ),
    (
        "POST",
        "/sysClient/exit",
        {"userId": "u1", "appPlatform": "fax"},
        400,
        1001,
        ["appPlatform", "fax"],
    ),
    ("POST", "/sysClient/exit", {}, 400, 1002, ["userId"]),
    ("POST", "/sysClient/updateTokenVal", {}, 400, 1001, ["ttl"]),
    ("POST", "/sysClient/updateTokenVal", {"ttl": 9}, 400, 1001, ["ttl", "9"]),
    (
        "POST",
        "/sysClient/updateTokenVal",
        {"ttl": 60, "token": "no-such-token-abc"},
        404,
        1005,
        ["token"],
    ),
    ("POST", "/user/online", {"userId": "bad id"}, 400, 1002, ["userId", "'bad id'"]),
    ("POST", "/msg/sendMsg", {"from": "u1", "to": "u2"}, 400, 1001, ["message"]),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u 1", "to": "u2", "message": "x"},
        400,
        1002,
        ["from", "'u 1'"],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "msgType": "loud"},
        400,
        1001,
        ["msgType", "loud"],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "persist": "maybe"},
        400,
        1001,
        ["persist", "maybe"],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x" * (LIMIT + 1)},
        413,
        1011,
        ["message", str(LIMIT)],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "all": "sometimes"},
        400,
        1001,
        ["all", "sometimes"],
    ),
    ("GET", "/user/list", {"page": 0}, 400, 1001, ["page", "0"]),
    ("GET", "/user/list", {"size": 501}, 400, 1001, ["size", "501"]),
    ("GET", "/user/list", {"size": "many"}, 400, 1001, ["size", "many"]),
    ("GET", "/msg/getMsg", {"userId": "u1"}, 400, 1002, ["peerId"]),
    # A blank query parameter is an absent one.
    ("GET", "/msg/getMsg", {"userId": "u1", "peerId": ""}, 400, 1002, ["missing peerId"]),
    # Seqs past protobuf's int64 are named, not a server error.
    (
        "GET",
        "/msg/getMsg",
        {"userId": "u1", "peerId": "u2", "afterSeq": "99999999999999999999"},
        400,
        1001,
        ["afterSeq", "99999999999999999999"],
    ),
    ("GET", "/msg/getBroadcast", {"beforeSeq": 2**63}, 400, 1001, ["beforeSeq", str(2**63)]),
    ("GET", "/user/list", {"page": "1_0"}, 400, 1001, ["page", "1_0"]),
    # A JSON body is typed: a string is not a number or a flag, and "" is a value.
    ("POST", "/sysClient/getToken", {"userId": True}, 400, 1002, ["userId true"]),
    ("POST", "/sysClient/getToken", {"userId": "u1", "ttl": "3600"}, 400, 1001, ["ttl", "'3600'"]),
    ("POST", "/sysClient/getToken", {"userId": "u1", "ttl": ""}, 400, 1001, ["ttl", "''"]),
    ("POST", "/sysClient/updateTokenVal", {"ttl": ""}, 400, 1001, ["ttl", "''"]),
    ("POST", "/sysClient/updateTokenVal", {"ttl": 60, "token": ""}, 400, 1001, ["token", "''"]),
    ("POST", "/sysClient/updateSettings", {"maxDevices": ""}, 400, 1001, ["maxDevices", "''"]),
    ("POST", "/sysClient/updateSettings", {"allowedOrigins": ""}, 400, 1001, ["allowedOrigins"]),
    (
        "POST",
        "/sysClient/updateSettings",
        {"allowedOrigins": "https://a.example"},
        400,
        1001,
        ["allowedOrigins", "list"],
    ),
    ("GET", "/msg/getBroadcast", {"beforeSeq": 0}, 400, 1001, ["beforeSeq", "0"]),
    (
        "POST",
        "/sysClient/updateSettings",
        {"allowedOrigins": {"a": 1}},
        400,
        1001,
        ['{"a":1}'],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "persist": "false"},
        400,
        1001,
        ["persist", "'false'"],
    ),
    # An empty user id, choice or flag is invalid, as in a WebSocket msg frame.
    ("POST", "/msg/sendMsg", {"from": "u1", "to": "u2"}, 400, 1001, ["missing message"]),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "persist": ""},
        400,
        1001,
        ["persist", "''"],
    ),
    (
        "POST",
        "/sysClient/exit",
        {"userId": "u1", "appPlatform": ""},
        400,
        1001,
        ["appPlatform", "''"],
    ),
    (
        "POST",
        "/sysClient/updateSettings",
        {"devicePolicy": ""},
        400,
        1001,
        ["devicePolicy", "''"],
    ),
    ("POST", "/msg/sendMsg", {"from": "u1", "to": "", "message": "x"}, 400, 1002, ["to", "''"]),
    ("POST", "/msg/sendMsg", {"from": "u1", "message": "x"}, 400, 1002, ["missing to"]),
    ("POST", "/msg/sendMsg", {"from": "", "to": "u2", "message": "x"}, 400, 1002, ["from", "''"]),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "msgType": ""},
        400,
        1001,
        ["msgType", "''"],
    ),
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "msgContType": ""},
        400,
        1001,
        ["msgContType", "''"],
    ),
    (
        "POST",
        "/sysClient/getToken",
        {"userId": "u1", "appPlatform": ""},
        400,
        1001,
        ["appPlatform", "''"],
    ),
    (
        "GET",
        "/msg/getMsg",
        {"userId": "u1", "peerId": "u2", "limit": 201},
        400,
        1001,
        ["limit", "201"],
    ),
    (
        "GET",
        "/msg/getMsg",
        {"userId": "u1", "peerId": "u2", "beforeSeq": 3, "afterSeq": 1},
        400,
        1001,
        ["beforeSeq"],
    ),
    ("GET", "/msg/getBroadcast", {"limit": 0}, 400, 1001, ["limit", "0"]),
    # A choice that is not a string gets the list of choices, as in a msg frame.
    (
        "POST",
        "/msg/sendMsg",
        {"from": "u1", "to": "u2", "message": "x", "msgType": 5},
        400,
        1001,
        ["invalid msgType 5: must be one of info, sysMsg, robot"],
    ),
    ("POST", "/sysClient/updateSettings", {"maxDevices": 0}, 400, 1001, ["maxDevices", "0"]),
    (
        "POST",
        "/sysClient/updateSettings",
        {"devicePolicy": "many"},
        400,
        1001,
        ["devicePolicy", "many"],
    ),
    ("POST", "/sysClient/updateSettings", {"defaultTtl": 3}, 400, 1001, ["defaultTtl", "3"]),
    (
        "POST",
        "/sysClient/updateSettings",
        {"allowedOrigins": 5},
        400,
        1001,
        ["allowedOrigins", "5"],
    ),
    (
        "POST",
        "/sysClient/updateSettings",
        {"allowedOrigins": ["https://a.example/path"]},
        400,
        1001,
        ["allowedOrigins", "/path"],
    ),
    (
        "POST",
        "/sysClient/updateSettings",
        {"allowedOrigins": ["has space"]},
        400,
        1001,
        ["allowedOrigins", "has space"],
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize("method,path,args,status,code,words", REST_CASES)
async def test_invalid_rest_field_named(cluster, acme, method, path, args, status, code, words):
    kwargs = {"json": args} if method == "POST" else {"params": args}
    response = await acme.http.request(method, path, **kwargs)
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    for word in words:
        assert word in body["msg"], body["msg"]
    assert len(body["msg"]) < 400
    assert body["data"] is None


@pytest.mark.integration
async def test_null_and_empty_accepted_alike(cluster, acme):
    """Send an empty message with null optional fields over WebSocket and REST, which accept it."""
    u1 = await connect_user(cluster, acme, "u1", 0)
    u2 = await connect_user(cluster, acme, "u2", 1)
    fields = {"message": "", "persist": False, "msgType": None, "msgContType": None}
    try:
        reply = await u1.request("msg", {"to": "u2", "clientMsgId": None, **fields})
        pushed = await next_msg(u2)
        assert pushed["msgId"] == reply["msgId"]
        assert pushed["message"] == ""
        assert pushed["msgType"] == "info"
        rest_fields = {"from": "u1", "to": "u2", "clientMsgId": None, **fields}
        response = await acme.http.post("/msg/sendMsg", json=rest_fields)
        body = response.json()
        assert body["code"] == 200, body
        pushed = await next_msg(u2)
        assert pushed["msgId"] == body["data"]["msgId"]
        assert pushed["msgContType"] == "text"
        page = await u2.request("sync", {"afterSeq": 0, "limit": None})
        assert page["hasMore"] is False
    finally:
        await u1.close()
        await u2.close()


@pytest.mark.integration
async def test_form_fields_parsed_and_blank(cluster, acme):
    """Send forms: their text parses as numbers and flags, and a blank field is absent."""
    token = await acme.http.post(
        "/sysClient/getToken", data={"userId": "u1", "ttl": "3600", "appPlatform": ""}
    )
    body = token.json()
    assert body["code"] == 200, body
    assert body["data"]["appPlatform"] == "web"
    sent = await acme.http.post(
        "/msg/sendMsg", data={"from": "u1", "to": "u2", "message": "x", "persist": "False"}
    )
    assert sent.json()["data"]["seq"] == 0
    origins = {"allowedOrigins": "https://a.example"}
    listed = await acme.http.post("/sysClient/updateSettings", data=origins)
    assert listed.json()["data"]["allowedOrigins"] == ["https://a.example"]
    cleared = await acme.http.post("/sysClient/updateSettings", data={"allowedOrigins": ""})
    assert cleared.json()["data"]["allowedOrigins"] == []
    blank = await acme.http.post("/msg/sendMsg", data={"from": "u1", "to": "", "message": "x"})
    assert blank.json()["msg"] == "missing to"


@pytest.mark.integration
async def test_empty_token_keeps_tenant_lifetime(cluster, acme):
    before = (await acme.http.post("/sysClient/updateSettings", json={})).json()["data"]
    response = await acme.http.post("/sysClient/updateTokenVal", json={"ttl": 20, "token": ""})
    assert response.json()["code"] == 1001
    after = (await acme.http.post("/sysClient/updateSettings", json={})).json()["data"]
    assert after["defaultTtl"] == before["defaultTtl"]


@pytest.mark.integration
async def test_frame_nulls_and_types(cluster):
    """Send frames with a null seq, no cmd and a mistyped login field."""
    async with websockets.connect(ws_url(cluster, 0)) as ws:
        await ws.send('{"seq": null, "cmd": "ping"}')
        reply = json.loads(await ws.recv())
        assert reply["response"]["data"] == "pong"
        await ws.send('{"seq": "s1"}')
        reply = json.loads(await ws.recv())
        assert reply["response"]["codeMsg"] == "missing cmd"
        await ws.send('{"seq": "s2", "cmd": "login", "data": {"token": "x", "deviceInfo": 5}}')
        reply = json.loads(await ws.recv())
        assert reply["response"]["code"] == 1001
        assert "deviceInfo 5" in reply["response"]["codeMsg"]


@pytest.mark.integration
async def test_huge_frame_number_named(cluster, acme):
    """Send a sync frame whose afterSeq is past a float's range."""
    u1 = await connect_user(cluster, acme, "u1", 0)
    try:
        await u1.ws.send('{"seq": "h1", "cmd": "sync", "data": {"afterSeq": 1e400}}')
        reply = await error_reply(u1)
        assert reply["seq"] == "h1"
        assert reply["cmd"] == "sync"
        assert reply["response"]["codeMsg"] == "invalid afterSeq 1e400: number out of range"
        assert await u1.request("ping") == "pong"
    finally:
        await u1.close()


@pytest.mark.integration
async def test_huge_number_secret_not_shown(cluster, acme):
    """Send a password and tokens of 1e400, which the errors name without the value."""
    operator = httpx.AsyncClient(
        base_url=edge_url(cluster, 0), headers={"Authorization": f"Bearer {cluster.admin_token}"}
    )
    async with operator:
        response = await operator.post(
            "/sysClient/createSysClient",
            content=b'{"account": "huge1", "password": 1e400}',
            headers={"content-type": "application/json"},
        )
    assert response.json()["msg"] == "invalid password: number out of range"
    response = await acme.http.post(
        "/sysClient/updateTokenVal",
        content=b'{"ttl": 60, "token": {"a": [1e400]}}',
        headers={"content-type": "application/json"},
    )
    assert response.json()["msg"] == "invalid token.a[0]: number out of range"
    async with websockets.connect(ws_url(cluster, 0)) as ws:
        await ws.send('{"seq": "l1", "cmd": "login", "data": {"token": 1e400}}')
        reply = json.loads(await ws.recv())
    assert reply["response"]["codeMsg"] == "invalid token: number out of range"


@pytest.mark.integration
async def test_long_fault_path_cut(cluster, acme):
    """Send a long key and a deep list around 1e400, whose paths come back cut."""
    long_key = b'{"userId": "u1", "' + b"k" * 5000 + b'": 1e400}'
    deep = b'{"userId": "u1", "x": ' + b"[" * 300 + b"1e400" + b"]" * 300 + b"}"
    for body in (long_key, deep):
        response = await acme.http.post(
            "/sysClient/getToken", content=body, headers={"content-type": "application/json"}
        )
        assert "characters) 1e400: number out of range" in response.json()["msg"]
        assert len(response.json()["msg"]) < 200
    async with websockets.connect(ws_url(cluster, 0)) as ws:
        await ws.send("[" * 5000 + "]" * 5000)
        reply = json.loads(await ws.recv())
        assert reply["response"]["codeMsg"] == "invalid frame: nested too deeply"
        await ws.send('{"seq": "p", "cmd": "ping"}')
        reply = json.loads(await ws.recv())
        assert reply["response"]["data"] == "pong"


@pytest.mark.integration
async def test_long_form_number_out_of_range(cluster, acme):
    """Send form ttls of 40 and 4,301 digits, and 5 after 4,300 zeros."""
    ttl = "9" * 40
    response = await acme.http.post("/sysClient/getToken", data={"userId": "u1", "ttl": ttl})
    assert response.json()["msg"] == f"invalid ttl {ttl}: must be between 10 and 2592000"
    padded = "0" * 4300 + "5"
    response = await acme.http.post("/sysClient/getToken", data={"userId": "u1", "ttl": padded})
    assert response.json()["msg"].endswith(": must be between 10 and 2592000")
    response = await acme.http.post(
        "/sysClient/getToken", data={"userId": "u1", "ttl": "9" * 4301}
    )
    assert response.json()["msg"].endswith("(4303 characters): number out of range")


BODY_CASES = [
    # (raw body, content type, words in msg)
    (b"{not json", "application/json", ["body", "JSON"]),
    (b'["userId"]', "application/json", ["body", "object"]),
    (b'{"userId": "\\ud800"}', "application/json", ["userId", "UTF-8"]),
    (b'{"userId": "u1", "extra": [{"x": "\\udc00"}]}', "application/json", ["extra[0].x"]),
    (b'{"userId": NaN}', "application/json", ["body", "JSON"]),
    # Numbers past a float's or an integer's range are named with their field.
    (b'{"userId": "u1", "ttl": 1e400}', "application/json", ["invalid ttl 1e400: number out"]),
    (b'{"userId": "u1", "ttl": ' + b"9" * 4301 + b"}", "application/json", ["ttl 999", "range"]),
    # msgspec counts a minus sign against its 4,300 characters.
    (b'{"userId": "u1", "ttl": -' + b"9" * 4300 + b"}", "application/json", ["-999", "range"]),
    # A repeated key: the first value is the one at fault.
    (b'{"userId": "u1", "ttl": 1e400, "ttl": 60}', "application/json", ["ttl 1e400"]),
    # msgspec reads UTF-8 only, without a byte-order mark.
    (b'\xef\xbb\xbf{"userId": "u1", "ttl": 1e400}', "application/json", ["body", "JSON"]),
    (b'{"userId": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", ["nested too"]),
    (b"\xff\xfe", "application/json", ["body"]),
]


@pytest.mark.integration
@pytest.mark.parametrize("body,content_type,words", BODY_CASES)
async def test_invalid_rest_body(cluster, acme, body, content_type, words):
    response = await acme.http.post(
        "/sysClient/getToken", content=body, headers={"content-type": content_type}
    )
    reply = response.json()
    assert (response.status_code, reply["code"]) == (400, 1001), reply
    for word in words:
        assert word in reply["msg"], reply["msg"]


@pytest.mark.integration
async def test_create_tenant_errors_never_echo_password(cluster):
    operator = httpx.AsyncClient(
        base_url=edge_url(cluster, 0), headers={"Authorization": f"Bearer {cluster.admin_token}"}
    )
    async with operator:
        for password in ("short", "p" * 129):
            response = await operator.post(
                "/sysClient/createSysClient", json={"account": unique("t"), "password": password}
            )
            body = response.json()
            assert (response.status_code, body["code"]) == (400, 1001)
            assert "password" in body["msg"]
            assert password not in body["msg"]
        response = await operator.post(
            "/sysClient/createSysClient", json={"account": unique("t"), "password": 12345678}
        )
        assert response.json()["code"] == 1001
        response = await operator.post(
            "/sysClient/createSysClient",
            json={"account": "bad/account", "password": "password-1"},
        )
        body = response.json()
        assert (response.status_code, body["code"]) == (400, 1001)
        assert "account" in body["msg"]
        assert "bad/account" in body["msg"]
        response = await operator.post(
            "/sysClient/createSysClient",
            json={"account": unique("t"), "password": "password-1", "phoneNum": "call me"},
        )
        body = response.json()
        assert (response.status_code, body["code"]) == (400, 1001)
        assert "phoneNum" in body["msg"]
        assert "call me" in body["msg"]
        # In JSON an empty string is a value, checked like any other.
        for field, body_fields in (
            ("account", {"account": "", "password": "password-1"}),
            ("phoneNum", {"account": unique("t"), "password": "password-1", "phoneNum": ""}),
        ):
            response = await operator.post("/sysClient/createSysClient", json=body_fields)
            assert response.json()["msg"].startswith(f"invalid {field} ''")


@pytest.mark.integration
async def test_unknown_token_error_never_echoes_token(cluster, acme):
    secret = "tok-" + "q" * 40
    response = await acme.http.post("/sysClient/updateTokenVal", json={"ttl": 60, "token": secret})
    body = response.json()
    assert (response.status_code, body["code"]) == (404, 1005)
    assert secret not in body["msg"]
    response = await acme.http.post("/sysClient/updateTokenVal", json={"ttl": 60, "token": 77})
    body = response.json()
    assert (response.status_code, body["code"]) == (400, 1001)
    assert "token" in body["msg"]


@pytest.mark.integration
async def test_websocket_rejects_plain_http(cluster):
    async with httpx.AsyncClient(base_url=edge_url(cluster, 0)) as client:
        response = await client.get("/acc")
    assert response.status_code in (400, 404, 426)
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(ws_url(cluster, 0).replace("/acc", "/nope"))
