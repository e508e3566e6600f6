"""The ``prim.v1.Auth`` gRPC servicer.

Each method checks its request, acts through :class:`~prim.auth.store.Store`
and ends a failed call with the contract code in the ``prim-code`` trailer.
Passwords and tokens never appear in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import secrets
from typing import Any

import grpc
from pymongo.errors import ConnectionFailure, PyMongoError

from prim.errors import Code, PrimError, Unavailable, abort, invalid
from prim.ids import (
    PLATFORMS,
    TTL_MAX_SECONDS,
    TTL_MIN_SECONDS,
    check_choice,
    check_id,
    check_int,
    check_user_id,
)
from prim.pb import auth_pb2, auth_pb2_grpc, common_pb2

from . import tenants
from .credentials import CredentialChecker
from .store import Store, ms_to_datetime, now_ms

log = logging.getLogger("prim.auth")

PROFILE_TEXT_MAX_CHARS = 256
# Bounds of a ListTenants page; the edge's listSysClients route has the same.
LIST_LIMIT_MAX = 500
LIST_OFFSET_MAX = 1_000_000_000
_TOKEN_ID = re.compile(r"[0-9a-f]{64}")
# Request fields that identify what a call acts on, logged with its errors.
_ID_FIELDS = ("account", "tenant", "user_id", "app_platform", "client_addr")


def token_id(token: str) -> str:
    """Hash a token to its hex SHA-256, which is all the store keeps of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def _invalid_token() -> PrimError:
    return PrimError(Code.UNAUTHORIZED, "invalid or expired token")


def _check_ttl(field: str, value: int) -> int:
    return check_int(field, value, TTL_MIN_SECONDS, TTL_MAX_SECONDS)


def _check_profile_text(field: str, value: str) -> str:
    if len(value) > PROFILE_TEXT_MAX_CHARS:
        raise invalid(
            field, value[:32] + "...", f"must be at most {PROFILE_TEXT_MAX_CHARS} characters"
        )
    return value


def _handle_errors(method):
    """Turn a PrimError or a MongoDB failure into an aborted call, and log it."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        ids = {f: getattr(request, f) for f in _ID_FIELDS if getattr(request, f, "")}
        try:
            return await method(self, request, context)
        except PrimError as error:
            level = logging.WARNING if isinstance(error, Unavailable) else logging.INFO
            log.log(
                level,
                "call failed",
                extra={"method": method.__name__, "code": error.code.value, "error": error.msg}
                | ids,
            )
            await abort(context, error)
        except ConnectionFailure as exc:
            log.warning(
                "MongoDB unreachable",
                extra={"method": method.__name__, "error": repr(exc)} | ids,
            )
            await abort(context, Unavailable("MongoDB unavailable"))
        except PyMongoError:
            log.exception("MongoDB operation failed", extra={"method": method.__name__} | ids)
            await abort(context, PrimError(Code.SERVER_ERROR, "internal error"))

    return wrapper


def _digest(request) -> str:
    """Return the token hash of a VerifyTokenRequest, or "" when it has none."""
    key = request.WhichOneof("key")
    if key == "token" and request.token:
        return token_id(request.token)
    if key == "token_id" and _TOKEN_ID.fullmatch(request.token_id):
        return request.token_id
    return ""


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, store: Store, credentials: CredentialChecker, default_ttl_seconds: int):
        self.store = store
        self.credentials = credentials
        self.default_ttl_seconds = default_ttl_seconds

    @_handle_errors
    async def CreateTenant(self, request, context):
        account = check_id("account", request.account)
        tenants.check_password(request.password)
        tenants.check_phone(request.phone_num)
        password_hash = await self.credentials.hasher.hash(request.password)
        tenant = tenants.new_tenant(
            account, request.phone_num, password_hash, self.default_ttl_seconds
        )
        await self.store.insert_tenant(tenant)
        log.info("tenant created", extra={"account": account})
        return tenants.to_message(tenant)

    @_handle_errors
    async def GetTenant(self, request, context):
        account = check_id("account", request.account)
        return tenants.to_message(await self._get_tenant(account))

    @_handle_errors
    async def ListTenants(self, request, context):
        offset = check_int("offset", request.offset, 0, LIST_OFFSET_MAX)
        limit = check_int("limit", request.limit, 1, LIST_LIMIT_MAX)
        total, page = await self.store.list_tenants(offset, limit)
        return auth_pb2.ListTenantsReply(
            total=total, tenants=[tenants.to_message(tenant) for tenant in page]
        )

    @_handle_errors
    async def VerifyTenant(self, request, context):
        tenant = await self.credentials.verify(
            request.account, request.password, request.client_addr
        )
        return tenants.to_message(tenant)

    @_handle_errors
    async def UpdateTenant(self, request, context):
        account = check_id("account", request.account)
        fields = tenants.update_fields(request)
        tenant = await self.store.update_tenant(account, fields)
        if tenant is None:
            raise tenants.not_found(account)
        return tenants.to_message(tenant)

    @_handle_errors
    async def IssueToken(self, request, context):
        tenant_id = check_id("tenant", request.tenant)
        user_id = check_user_id("user_id", request.user_id)
        platform = check_choice("app_platform", request.app_platform or "web", PLATFORMS)
        nickname = _check_profile_text("nickname", request.nickname)
        avatar = _check_profile_text("avatar", request.avatar)
        if request.ttl_seconds:
            _check_ttl("ttl_seconds", request.ttl_seconds)
        tenant = await self._get_tenant(tenant_id)
        ttl = request.ttl_seconds or tenant.get("default_ttl_seconds", self.default_ttl_seconds)

        token = secrets.token_urlsafe(32)
        expires_ms = now_ms() + ttl * 1000
        await self.store.insert_token(
            {
                "_id": token_id(token),
                "tenant": tenant_id,
                "user_id": user_id,
                "app_platform": platform,
                "nickname": nickname,
                "avatar": avatar,
                "created_at": now_ms(),
                "expires_ms": expires_ms,
                "expires_at": ms_to_datetime(expires_ms),
            }
        )
        await self.store.set_profile(tenant_id, user_id, nickname, avatar)
        return auth_pb2.IssueTokenReply(
            token=token, user_id=user_id, app_platform=platform, expires_at=expires_ms
        )

    @_handle_errors
    async def VerifyToken(self, request, context):
        return await self._verify_token(request)

    @_handle_errors
    async def VerifyTokens(self, request, context):
        # One query finds every token of the batch: a connect storm sends
        # hundreds per call, and one lookup each would queue on MongoDB.
        digests = [_digest(single) for single in request.requests]
        try:
            tokens = await self.store.find_live_tokens(sorted({d for d in digests if d}))
        except ConnectionFailure as exc:
            log.warning("MongoDB unreachable", extra={"method": "VerifyTokens", "error": repr(exc)})
            error = Unavailable("MongoDB unavailable")
            result = auth_pb2.TokenResult(code=int(error.code), msg=error.msg)
            return auth_pb2.VerifyTokensReply(results=[result] * len(digests))
        names = sorted({token["tenant"] for token in tokens.values()})
        found = await asyncio.gather(
            *(self.store.get_tenant_cached(name) for name in names), return_exceptions=True
        )
        tenants = dict(zip(names, found, strict=True))
        outcomes: list = []
        for digest in digests:
            token = tokens.get(digest) if digest else None
            tenant = tenants.get(token["tenant"]) if token is not None else None
            if isinstance(tenant, BaseException):
                outcomes.append(tenant)
            elif token is None or tenant is None:
                outcomes.append(_invalid_token())
            else:
                outcomes.append(_token_info(token, tenant))
        results = []
        for outcome in outcomes:
            if isinstance(outcome, auth_pb2.TokenInfo):
                results.append(auth_pb2.TokenResult(info=outcome))
                continue
            if isinstance(outcome, ConnectionFailure):
                log.warning("MongoDB unreachable", extra={"method": "VerifyTokens", "error": repr(outcome)})
                outcome = Unavailable("MongoDB unavailable")
            elif not isinstance(outcome, PrimError):
                log.error("verifying a token failed", extra={"error": repr(outcome)})
                outcome = PrimError(Code.SERVER_ERROR, "internal error")
            results.append(auth_pb2.TokenResult(code=int(outcome.code), msg=outcome.msg))
        return auth_pb2.VerifyTokensReply(results=results)

    async def _verify_token(self, request) -> auth_pb2.TokenInfo:
        digest = _digest(request)
        if not digest:
            raise _invalid_token()
        return await self._token_info(await self.store.find_live_token(digest))

    async def _token_info(self, token: dict | None) -> auth_pb2.TokenInfo:
        if token is None:
            raise _invalid_token()
        tenant = await self.store.get_tenant_cached(token["tenant"])
        if tenant is None:
            raise _invalid_token()
        return _token_info(token, tenant)

    @_handle_errors
    async def RevokeTokens(self, request, context):
        tenant_id = check_id("tenant", request.tenant)
        user_id = check_user_id("user_id", request.user_id)
        platform = request.app_platform
        if platform:
            check_choice("app_platform", platform, PLATFORMS)
        revoked = await self.store.delete_tokens(tenant_id, user_id, platform)
        log.info(
            "tokens revoked",
            extra={
                "tenant": tenant_id,
                "user_id": user_id,
                "app_platform": platform,
                "revoked": revoked,
            },
        )
        return auth_pb2.RevokeTokensReply(revoked=revoked)

    @_handle_errors
    async def UpdateTokenTtl(self, request, context):
        tenant_id = check_id("tenant", request.tenant)
        ttl = _check_ttl("ttl_seconds", request.ttl_seconds)
        if not request.token:
            tenant = await self.store.update_tenant(tenant_id, {"default_ttl_seconds": ttl})
            if tenant is None:
                raise tenants.not_found(tenant_id)
            return auth_pb2.UpdateTokenTtlReply(default_ttl_seconds=ttl)

        expires_ms = now_ms() + ttl * 1000
        if not await self.store.set_token_expiry(tenant_id, token_id(request.token), expires_ms):
            # A token of another tenant gets the same error, so it looks absent.
            raise PrimError(Code.NOT_FOUND, "token not found or expired")
        return auth_pb2.UpdateTokenTtlReply(expires_at=expires_ms)

    @_handle_errors
    async def GetProfile(self, request, context):
        tenant_id = check_id("tenant", request.tenant)
        user_id = check_user_id("user_id", request.user_id)
        profile = await self.store.get_profile(tenant_id, user_id) or {}
        return common_pb2.Profile(
            user_id=user_id,
            nickname=profile.get("nickname", ""),
            avatar=profile.get("avatar", ""),
        )

    async def _get_tenant(self, account: str) -> dict[str, Any]:
        tenant = await self.store.get_tenant(account)
        if tenant is None:
            raise tenants.not_found(account)
        return tenant


def _token_info(token: dict[str, Any], tenant: dict[str, Any]) -> auth_pb2.TokenInfo:
    return auth_pb2.TokenInfo(
        token_id=token["_id"],
        tenant=token["tenant"],
        user_id=token["user_id"],
        app_platform=token["app_platform"],
        nickname=token.get("nickname", ""),
        avatar=token.get("avatar", ""),
        expires_at=token["expires_ms"],
        device_policy=tenant.get("device_policy", tenants.DEFAULT_DEVICE_POLICY),
        max_devices=tenant.get("max_devices", tenants.DEFAULT_MAX_DEVICES),
        allowed_origins=tenant.get("allowed_origins", []),
    )
