"""The REST client of a tenant backend or of the operator."""

from __future__ import annotations

from typing import Any

import httpx

from .errors import ApiError


class TenantClient:
    """Calls one edge node's REST API with tenant credentials or the operator token.

    Pass ``account`` and ``password`` for a tenant, or ``admin_token`` for the
    operator. Each method returns the reply's ``data``.
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
        self.http = httpx.AsyncClient(base_url=base_url, auth=auth, headers=headers, timeout=timeout)

    async def __aenter__(self) -> TenantClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs) -> Any:
        """Send a request; return ``data`` or raise ApiError."""
        response = await self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(1004, f"non-JSON reply with HTTP {response.status_code}", response.status_code) from None
        if response.status_code != 200 or body.get("code") != 200:
            raise ApiError(body.get("code", 1004), body.get("msg", ""), response.status_code, body.get("data"))
        return body["data"]

    @staticmethod
    def _clean(values: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in values.items() if value is not None}

    # Operator

    async def create_sys_client(self, account: str, password: str, phone_num: str | None = None) -> dict:
        return await self.call(
            "POST",
            "/sysClient/createSysClient",
            json=self._clean({"account": account, "password": password, "phoneNum": phone_num}),
        )

    async def get_sys_client(self, account: str) -> dict:
        return await self.call("GET", "/sysClient/getSysClient", params={"account": account})

    # Tokens

    async def get_token(
        self,
        user_id: str,
        app_platform: str = "web",
        *,
        nickname: str | None = None,
        avatar: str | None = None,
        ttl: int | None = None,
    ) -> dict:
        body = {"userId": user_id, "appPlatform": app_platform, "nickname": nickname, "avatar": avatar, "ttl": ttl}
        return await self.call("POST", "/sysClient/getToken", json=self._clean(body))

    async def exit(self, user_id: str, app_platform: str | None = None) -> dict:
        return await self.call(
            "POST", "/sysClient/exit", json=self._clean({"userId": user_id, "appPlatform": app_platform})
        )

    async def update_token_val(self, ttl: int, token: str | None = None) -> dict:
        return await self.call("POST", "/sysClient/updateTokenVal", json=self._clean({"ttl": ttl, "token": token}))

    # Users

    async def user_list(self, page: int = 1, size: int = 100) -> dict:
        return await self.call("GET", "/user/list", params={"page": page, "size": size})

    async def user_online(self, user_id: str) -> dict:
        return await self.call("POST", "/user/online", json={"userId": user_id})

    async def list_user_maps(self) -> dict:
        return await self.call("GET", "/user/listUserMaps")

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
    ) -> dict:
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
        return await self.call("POST", "/msg/sendMsg", json=self._clean(body))

    async def get_msg(
        self,
        user_id: str,
        peer_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> dict:
        params = {"userId": user_id, "peerId": peer_id, "beforeSeq": before_seq, "afterSeq": after_seq, "limit": limit}
        return await self.call("GET", "/msg/getMsg", params=self._clean(params))

    async def get_broadcast(
        self, *, before_seq: int | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> dict:
        params = {"beforeSeq": before_seq, "afterSeq": after_seq, "limit": limit}
        return await self.call("GET", "/msg/getBroadcast", params=self._clean(params))

    async def system_state(self) -> dict:
        return await self.call("GET", "/system/state")
