"""Exceptions raised by the clients.

``ClientError`` is the root. ``ApiError`` is a reply with a contract code
other than 200, ``Kicked`` a ``kick`` push that ended a ``UserClient``, and
``ClientClosed`` a call on a ``UserClient`` that was closed.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of the exceptions that the clients raise."""


class ApiError(ClientError):
    """A reply with a code other than 200: the contract code, its message and the HTTP status.

    ``status`` is None for WebSocket replies.
    """

    def __init__(self, code: int, msg: str, status: int | None = None, data: Any = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.data = data


class Kicked(ClientError):
    """A ``kick`` push closed the connection, for ``replaced``, ``revoked`` or ``expired``."""

    def __init__(self, reason: str):
        super().__init__(f"kicked: {reason}")
        self.reason = reason


class ClientClosed(ClientError):
    """The client was closed, so the call cannot complete."""
