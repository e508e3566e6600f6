"""Typed results of the clients, decoded from the contract's JSON with msgspec.

Attributes use snake_case (``msg_id``, ``has_more``), and the wire names are
the camelCase of the contract (``msgId``, ``hasMore``). The sender of a
:class:`Message` is ``sender`` because ``from`` is a Python keyword.

Results also read like the dicts that the clients used to return:
``result["msgId"]``, ``"details" in state`` and ``set(result)`` work with the
wire names, and a field that the reply left out is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Result(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """Base of every result: a frozen Struct with read-only access by wire name."""

    def __getitem__(self, key: str) -> Any:
        try:
            index = self.__struct_encode_fields__.index(key)
        except ValueError:
            raise KeyError(key) from None
        value = getattr(self, self.__struct_fields__[index])
        if value is UNSET:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Return the wire names of the fields that the reply contained."""
        return [
            wire
            for wire, name in zip(self.__struct_encode_fields__, self.__struct_fields__)
            if getattr(self, name) is not UNSET
        ]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def items(self) -> list[tuple[str, Any]]:
        return [(key, self[key]) for key in self.keys()]

    def to_dict(self) -> dict[str, Any]:
        """Return the result as the contract's JSON object, nested results included."""
        return msgspec.to_builtins(self)


# Tenants and tokens


class SysClient(Result):
    """A tenant. The password is never returned."""

    account: str
    phone_num: str = ""
    created_at: int = 0


class SysClientPage(Result):
    """One page of ``listSysClients``; ``total`` counts every tenant."""

    total: int
    sys_clients: list[SysClient]


class Token(Result):
    """A user token from ``getToken``; ``expires_at`` is in ms since the Unix epoch."""

    token: str
    user_id: str
    app_platform: str
    expires_at: int


class ExitResult(Result):
    """Tokens revoked and connections closed by ``exit``."""

    revoked: int
    closed: int


class TokenLifetime(Result):
    """The reply of ``updateTokenVal``: ``expires_at`` with a token, else ``default_ttl``."""

    expires_at: int | UnsetType = UNSET
    default_ttl: int | UnsetType = UNSET


# Users


class User(Result):
    """One live connection of a user, as the platform recorded it."""

    acc_ip: str = ""
    acc_port: str = ""
    app_platform: str = ""
    sys_account: str = ""
    user_id: str = ""
    avatar: str = ""
    nickname: str = ""
    client_ip: str = ""
    client_port: str = ""
    login_time: int = 0
    heartbeat_time: int = 0
    log_out_time: int = 0
    address: str = ""
    qua: str = ""
    device_info: str = ""
    is_logoff: bool = False


class UserPage(Result):
    """One page of ``user/list``; ``total`` counts the tenant's online connections."""

    total: int
    users: list[User]


class OnlineStatus(Result):
    """The reply of ``user/online``: one ``User`` per live connection in ``devices``."""

    user_id: str
    online: bool
    devices: list[User]


# Messages


class Sender(Result):
    """The profile of a message's sender."""

    user_id: str
    nickname: str = ""
    avatar: str = ""


class Message(Result):
    """A chat message as pushed and as returned by ``sync``, ``getMsg`` and ``getBroadcast``.

    ``seq`` is the position on the timeline of the user it is shown to, 0 for
    an online-only message and for a broadcast.
    """

    msg_id: str
    seq: int
    time: int
    sender: Sender = msgspec.field(name="from")
    to: str = ""
    message: str = ""
    msg_type: str = "info"
    msg_cont_type: str = "text"
    client_msg_id: str = ""
    broadcast_seq: int | UnsetType = UNSET


class MessagePage(Result):
    """A page of messages in ascending order, and whether more exist past the cursor."""

    messages: list[Message]
    has_more: bool


class SendResult(Result):
    """The reply to a sent message; ``seq`` is the sender's, 0 for a broadcast or online-only.

    ``delivered`` (connections reached now) and ``broadcast_seq`` come only from
    REST ``sendMsg``.
    """

    msg_id: str
    seq: int
    time: int
    delivered: int | UnsetType = UNSET
    broadcast_seq: int | UnsetType = UNSET


# System


class EdgeInfo(Result):
    """One edge node alive, from the operator's view of ``system/state``."""

    node_id: str
    grpc_addr: str = ""
    http_addr: str = ""
    started_at: int = 0


class StateDetails(Result):
    """The operator-only part of ``system/state``."""

    node_id: str
    started_at: int
    tenants_online: int
    edges: list[EdgeInfo]


class SystemState(Result):
    """The reply of ``system/state``; ``edges_alive`` is None when presence is unreachable."""

    status: str
    version: str
    connections: int
    edges_alive: int | None = None
    details: StateDetails | UnsetType = UNSET
