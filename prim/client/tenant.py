"""The REST client of a tenant backend or of the operator."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import msgspec

from .errors import ApiError
from .models import (
    ExitResult,
    MessagePage,
    OnlineStatus,
    SendResult,
    SysClient,
    SysClientPage,
    SystemState,
    Token,
    TokenLifetime,
    User,
    UserPage,
)

T = TypeVar("T")


class TenantClient:
    """Calls one edge node's REST API with tenant credentials or the operator token.

    Pass ``account`` and ``password`` for a tenant (sent as HTTP Basic), or
    ``admin_token`` for the operator (sent as a bearer token). Each method
    returns the reply's ``data`` as a typed result from :mod:`prim.client.models`
    and raises :class:`ApiError` with the contract code, message and HTTP
    status when the reply is an error. Network failures raise httpx's
    ``TransportError``.
    """

    def __init__(
        self,
        base_url: str,
        account: str | None = None,
        password: str | None = None,
        *,
        admin_token: str | None = None,
        timeout: float = 10.0,
    ):
        auth = httpx.BasicAuth(account, password) if account is not None else None
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.http = httpx.AsyncClient(
            base_url=base_url, auth=auth, headers=headers, timeout=timeout
        )

    async def __aenter__(self) -> TenantClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs) -> Any:
        """Send a request and return its ``data`` as decoded JSON, or raise ApiError."""
        response = await self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(
                1004, f"non-JSON reply with HTTP {response.status_code}", response.status_code
            ) from None
        if not isinstance(body, dict):
            raise ApiError(1004, f"invalid reply with HTTP {response.status_code}: not an object")
        if response.status_code != 200 or body.get("code") != 200:
            raise ApiError(
                body.get("code", 1004), body.get("msg", ""), response.status_code, body.get("data")
            )
        return body.get("data")

    async def _typed(self, result_type: type[T], method: str, path: str, **kwargs) -> T:
        data = await self.call(method, path, **kwargs)
        try:
            return msgspec.convert(data, result_type)
        except msgspec.ValidationError as exc:
            raise ApiError(1004, f"unexpected reply to {method} {path}: {exc}", 200, data) from None

    @staticmethod
    def _clean(values: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in values.items() if value is not None}

    # Operator

    async def create_sys_client(
        self, account: str, password: str, phone_num: str | None = None
    ) -> SysClient:
        body = self._clean({"account": account, "password": password, "phoneNum": phone_num})
        return await self._typed(SysClient, "POST", "/sysClient/createSysClient", json=body)

    async def get_sys_client(self, account: str) -> SysClient:
        params = {"account": account}
        return await self._typed(SysClient, "GET", "/sysClient/getSysClient", params=params)

    async def list_sys_clients(self, page: int = 1, size: int = 100) -> SysClientPage:
        params = {"page": page, "size": size}
        return await self._typed(SysClientPage, "GET", "/sysClient/listSysClients", params=params)

    # Tokens

    async def get_token(
        self,
        user_id: str,
        app_platform: str = "web",
        *,
        nickname: str | None = None,
        avatar: str | None = None,
        ttl: int | None = None,
    ) -> Token:
        body = {
            "userId": user_id,
            "appPlatform": app_platform,
            "nickname": nickname,
            "avatar": avatar,
            "ttl": ttl,
        }
        return await self._typed(Token, "POST", "/sysClient/getToken", json=self._clean(body))

    async def exit(self, user_id: str, app_platform: str | None = None) -> ExitResult:
        body = self._clean({"userId": user_id, "appPlatform": app_platform})
        return await self._typed(ExitResult, "POST", "/sysClient/exit", json=body)

    async def update_token_val(self, ttl: int, token: str | None = None) -> TokenLifetime:
        """Set a token to expire ``ttl`` seconds from now, or without one the tenant default."""
        body = self._clean({"ttl": ttl, "token": token})
        return await self._typed(TokenLifetime, "POST", "/sysClient/updateTokenVal", json=body)

    # Users

    async def user_list(self, page: int = 1, size: int = 100) -> UserPage:
        params = {"page": page, "size": size}
        return await self._typed(UserPage, "GET", "/user/list", params=params)

    async def user_online(self, user_id: str) -> OnlineStatus:
        return await self._typed(OnlineStatus, "POST", "/user/online", json={"userId": user_id})

    async def list_user_maps(self) -> dict[str, list[User]]:
        """Return the tenant's online connections by edge node id."""
        return await self._typed(dict[str, list[User]], "GET", "/user/listUserMaps")

    # Messages

    async def send_msg(
        self,
        sender: str,
        message: str,
        *,
        to: str | None = None,
        all: bool = False,
        msg_type: str | None = None,
        msg_cont_type: str | None = None,
        client_msg_id: str | None = None,
        persist: bool | None = None,
    ) -> SendResult:
        body = {
            "from": sender,
            "to": to,
            "all": all or None,
            "message": message,
            "msgType": msg_type,
            "msgContType": msg_cont_type,
            "clientMsgId": client_msg_id,
            "persist": persist,
        }
        return await self._typed(SendResult, "POST", "/msg/sendMsg", json=self._clean(body))

    async def get_msg(
        self,
        user_id: str,
        peer_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> MessagePage:
        params = {
            "userId": user_id,
            "peerId": peer_id,
            "beforeSeq": before_seq,
            "afterSeq": after_seq,
            "limit": limit,
        }
        return await self._typed(MessagePage, "GET", "/msg/getMsg", params=self._clean(params))

    async def get_broadcast(
        self,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> MessagePage:
        params = self._clean({"beforeSeq": before_seq, "afterSeq": after_seq, "limit": limit})
        return await self._typed(MessagePage, "GET", "/msg/getBroadcast", params=params)

    async def system_state(self) -> SystemState:
        return await self._typed(SystemState, "GET", "/system/state")
