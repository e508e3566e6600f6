"""The log filters: connection notes of uvicorn and websockets dropped, the rest kept."""

from __future__ import annotations

import io
import json
import logging

import pytest

from prim import logs


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("INFO", "json")
    buffer = io.StringIO()
    root.handlers[0].stream = buffer
    yield buffer
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.filters = [f for f in uvicorn_error.filters if not isinstance(f, logs.DropConnectionNotes)]
    root.handlers[:], level = saved
    root.setLevel(level)


def events(buffer: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in buffer.getvalue().splitlines()]


def test_connection_notes_dropped_others_kept(captured):
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/acc")
    uvicorn_error.info("connection open")
    uvicorn_error.info("connection closed")
    uvicorn_error.info('%s - "WebSocket %s" 403', "127.0.0.1:5000", "/acc")
    uvicorn_error.info("Started server process [%d]", 42)
    uvicorn_error.warning("connection open")
    logging.getLogger("prim.edge.session").info("connection open")
    assert events(captured) == [
        '127.0.0.1:5000 - "WebSocket /acc" 403',
        "Started server process [42]",
        "connection open",
        "connection open",
    ]
