"""Async Python clients for prim.

* :class:`TenantClient`: a tenant backend (or the operator) calling the REST
  API of an edge node.
* :class:`UserConnection`: an end user's WebSocket on ``/acc``.

Both raise :class:`ApiError` with the contract's code and message.
"""

from .errors import ApiError
from .tenant import TenantClient
from .user import UserConnection

__all__ = ["ApiError", "TenantClient", "UserConnection"]
