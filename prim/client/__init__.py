"""Async Python clients for prim.

* :class:`TenantClient`: a tenant backend (or the operator) calling the REST
  API of an edge node, with typed results from :mod:`prim.client.models`.
* :class:`UserClient`: an end user's session on ``/acc`` that sends
  heartbeats, reconnects, catches up with ``sync`` and drops duplicates.
* :class:`UserConnection`: one raw WebSocket on ``/acc``, frame by frame.

Error replies raise :class:`ApiError` with the contract's code and message.
"""

from .errors import ApiError, ClientClosed, ClientError, Kicked
from .models import (
    EdgeInfo,
    ExitResult,
    Message,
    MessagePage,
    OnlineStatus,
    Result,
    Sender,
    SendResult,
    StateDetails,
    SysClient,
    SysClientPage,
    SystemState,
    Token,
    TokenLifetime,
    User,
    UserPage,
)
from .tenant import TenantClient
from .user import UserConnection
from .user_client import UserClient

__all__ = [
    "ApiError",
    "ClientClosed",
    "ClientError",
    "EdgeInfo",
    "ExitResult",
    "Kicked",
    "Message",
    "MessagePage",
    "OnlineStatus",
    "Result",
    "SendResult",
    "Sender",
    "StateDetails",
    "SysClient",
    "SysClientPage",
    "SystemState",
    "TenantClient",
    "Token",
    "TokenLifetime",
    "User",
    "UserClient",
    "UserConnection",
    "UserPage",
]
