"""The auth service over gRPC, against the real MongoDB wire-protocol server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import subprocess
import time
from contextlib import asynccontextmanager

import argon2
import grpc
import pytest
from pymongo import AsyncMongoClient

from prim import devcluster, rpc
from prim.auth.server import build
from prim.auth.settings import SETTINGS
from prim.auth.store import TOKEN_LOOKUP_CHUNK
from prim.config import Settings
from prim.errors import PrimError
from prim.pb import auth_pb2, auth_pb2_grpc

SERVICE_TOKEN = "test-service-token"
PASSWORD = "correct horse battery"


class AuthClient:
    """A Peer to an in-process auth server, with the app and database behind it."""

    def __init__(self, peer: rpc.Peer, app, db):
        self.peer = peer
        self.app = app
        self.db = db

    async def __call__(self, method: str, **fields):
        request_class = getattr(auth_pb2, method + "Request")
        return await self.peer.call(method, request_class(**fields))

    async def error(self, method: str, **fields) -> PrimError:
        """Call ``method`` and return the PrimError it must raise."""
        with pytest.raises(PrimError) as caught:
            await self(method, **fields)
        return caught.value

    async def tenant(self, account: str, password: str = PASSWORD):
        return await self("CreateTenant", account=account, password=password)

    async def token(self, tenant: str, user_id: str, **fields) -> auth_pb2.IssueTokenReply:
        return await self("IssueToken", tenant=tenant, user_id=user_id, **fields)


@asynccontextmanager
async def running_auth(mongo_url: str, db_name: str, **overrides):
    environ = {
        "PRIM_MONGO_URL": mongo_url,
        "PRIM_MONGO_DB": db_name,
        "PRIM_SERVICE_TOKEN": SERVICE_TOKEN,
        **{"PRIM_" + key.upper(): str(value) for key, value in overrides.items()},
    }
    app = await build(Settings(SETTINGS, environ))
    server, _health = rpc.make_server(app.service_names, SERVICE_TOKEN)
    for add, servicer in app.servicers:
        add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    peer = rpc.Peer(
        "auth",
        f"127.0.0.1:{port}",
        auth_pb2_grpc.AuthStub,
        "prim.v1.Auth",
        service_token=SERVICE_TOKEN,
    )
    mongo = AsyncMongoClient(mongo_url)
    try:
        yield AuthClient(peer, app, mongo[db_name])
    finally:
        await mongo.close()
        await peer.close()
        await server.stop(0)
        await app.close()


@pytest.fixture
async def auth(mongo_server, db_name):
    async with running_auth(mongo_server, db_name) as client:
        yield client


# CreateTenant and GetTenant


async def test_create_tenant_returns_public_fields(auth):
    before = int(time.time() * 1000)
    tenant = await auth("CreateTenant", account="acme", password=PASSWORD, phone_num="+4912345")
    assert tenant.account == "acme"
    assert tenant.phone_num == "+4912345"
    assert before <= tenant.created_at <= int(time.time() * 1000)
    assert tenant.default_ttl_seconds == 43200
    assert tenant.device_policy == "per-platform"
    assert tenant.max_devices == 5
    assert list(tenant.allowed_origins) == []
    assert PASSWORD not in str(tenant)
    assert "password" not in {field.name for field in auth_pb2.Tenant.DESCRIPTOR.fields}


async def test_create_tenant_stores_argon2id_hash(auth):
    await auth.tenant("acme")
    stored = await auth.db.tenants.find_one({"_id": "acme"})
    assert stored["password_hash"].startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(stored["password_hash"], PASSWORD)
    assert PASSWORD not in str(stored)


@pytest.mark.parametrize(
    "fields",
    [
        {"account": "", "password": PASSWORD},
        {"account": "bad account", "password": PASSWORD},
        {"account": "x" * 65, "password": PASSWORD},
        {"account": "acme", "password": "short7!"},
        {"account": "acme", "password": "p" * 129},
        {"account": "acme", "password": PASSWORD, "phone_num": "12-34"},
        {"account": "acme", "password": PASSWORD, "phone_num": "1" * 21},
        {"account": "acme", "password": PASSWORD, "phone_num": "++1"},
    ],
)
async def test_create_tenant_rejects_invalid_input(auth, fields):
    error = await auth.error("CreateTenant", **fields)
    assert error.code == 1001
    assert fields["password"] not in error.msg


async def test_create_tenant_message_names_field(auth):
    error = await auth.error("CreateTenant", account="bad account", password=PASSWORD)
    assert "account" in error.msg
    assert "'bad account'" in error.msg
    error = await auth.error("CreateTenant", account="acme", password="secret7")
    assert "password" in error.msg
    assert "secret7" not in error.msg


async def test_create_tenant_taken_account(auth):
    await auth.tenant("acme")
    error = await auth.error("CreateTenant", account="acme", password="other password")
    assert error.code == 1009
    assert "acme" in error.msg


async def test_get_tenant(auth):
    await auth("CreateTenant", account="acme", password=PASSWORD, phone_num="123")
    tenant = await auth("GetTenant", account="acme")
    assert tenant.account == "acme"
    assert tenant.phone_num == "123"
    error = await auth.error("GetTenant", account="nobody")
    assert error.code == 1005
    assert "nobody" in error.msg


async def test_list_tenants_pages_by_account(auth):
    for account in ("carol", "acme", "bob"):
        await auth.tenant(account)
    first = await auth("ListTenants", offset=0, limit=2)
    second = await auth("ListTenants", offset=2, limit=2)
    assert first.total == 3
    assert [tenant.account for tenant in first.tenants] == ["acme", "bob"]
    assert [tenant.account for tenant in second.tenants] == ["carol"]
    assert first.tenants[0].default_ttl_seconds == 43200
    assert PASSWORD not in str(first)


@pytest.mark.parametrize(
    "fields", [{"offset": 0, "limit": 0}, {"offset": -1, "limit": 10}, {"offset": 0, "limit": 501}]
)
async def test_list_tenants_rejects_bad_page(auth, fields):
    error = await auth.error("ListTenants", **fields)
    assert error.code == 1001


# VerifyTenant


async def test_verify_tenant_accepts_password(auth):
    await auth.tenant("acme")
    tenant = await auth("VerifyTenant", account="acme", password=PASSWORD, client_addr="10.0.0.1")
    assert tenant.account == "acme"


async def test_verify_tenant_same_error_for_unknown_account(auth):
    await auth.tenant("acme")
    wrong = await auth.error("VerifyTenant", account="acme", password="wrong password")
    unknown = await auth.error("VerifyTenant", account="nobody", password=PASSWORD)
    malformed = await auth.error("VerifyTenant", account="bad account", password=PASSWORD)
    for error in (wrong, unknown, malformed):
        assert error.code == 1003
        assert error.msg == "invalid credentials"


async def test_verify_tenant_caches_success(auth):
    await auth.tenant("acme")
    hasher = auth.app.servicers[0][1].credentials.hasher
    calls = []
    original = hasher.verify

    async def counting_verify(password_hash, password):
        calls.append(password_hash)
        return await original(password_hash, password)

    hasher.verify = counting_verify
    for _ in range(3):
        await auth("VerifyTenant", account="acme", password=PASSWORD)
    assert len(calls) == 1
    # Failures are never cached: each wrong password is checked again.
    for _ in range(2):
        await auth.error("VerifyTenant", account="acme", password="wrong password")
    assert len(calls) == 3


async def test_verify_tenant_cache_follows_password_change(auth):
    await auth.tenant("acme")
    await auth("VerifyTenant", account="acme", password=PASSWORD)
    new_hash = argon2.PasswordHasher().hash("new password 123")
    await auth.db.tenants.update_one({"_id": "acme"}, {"$set": {"password_hash": new_hash}})
    await asyncio.sleep(2.1)  # the tenant cache keeps a document for at most 2 s
    error = await auth.error("VerifyTenant", account="acme", password=PASSWORD)
    assert error.code == 1003
    tenant = await auth("VerifyTenant", account="acme", password="new password 123")
    assert tenant.account == "acme"


async def test_verify_tenant_rate_limit_per_account(mongo_server, db_name):
    async with running_auth(mongo_server, db_name, login_failures_per_account="3/2 second") as auth:
        await auth.tenant("acme")
        await auth.tenant("other")
        for _ in range(3):
            error = await auth.error("VerifyTenant", account="acme", password="wrong password")
            assert error.code == 1003
        limited = await auth.error("VerifyTenant", account="acme", password=PASSWORD)
        assert limited.code == 1012
        assert limited.retry_after is not None
        assert 0 < limited.retry_after <= 2
        assert "acme" in limited.msg
        # Another account is not affected.
        assert (await auth("VerifyTenant", account="other", password=PASSWORD)).account == "other"

        await asyncio.sleep(limited.retry_after + 0.1)
        tenant = await auth("VerifyTenant", account="acme", password=PASSWORD)
        assert tenant.account == "acme"


async def test_verify_tenant_rate_limit_per_address(mongo_server, db_name):
    async with running_auth(mongo_server, db_name, login_failures_per_address="3/2 second") as auth:
        await auth.tenant("acme")
        for account in ("a1", "a2", "a3"):
            error = await auth.error(
                "VerifyTenant", account=account, password=PASSWORD, client_addr="10.0.0.9"
            )
            assert error.code == 1003
        limited = await auth.error(
            "VerifyTenant", account="acme", password=PASSWORD, client_addr="10.0.0.9"
        )
        assert limited.code == 1012
        assert limited.retry_after > 0
        tenant = await auth(
            "VerifyTenant", account="acme", password=PASSWORD, client_addr="10.0.0.10"
        )
        assert tenant.account == "acme"


async def test_verify_tenant_rate_limit_in_redis(mongo_server, redis_server, db_name):
    # A synchronous `limits` URI is accepted and used through its async form.
    async with running_auth(
        mongo_server,
        db_name,
        login_failures_per_account="2/2 second",
        rate_limit_storage=redis_server,
    ) as auth:
        await auth.tenant("acme")
        for _ in range(2):
            error = await auth.error("VerifyTenant", account="acme", password="wrong password")
            assert error.code == 1003
        limited = await auth.error("VerifyTenant", account="acme", password=PASSWORD)
        assert limited.code == 1012
        assert limited.retry_after > 0


async def test_verify_tenant_never_logs_password(auth, caplog):
    caplog.set_level(logging.DEBUG)
    await auth.error("CreateTenant", account="acme", password="tiny")
    await auth.tenant("acme")
    await auth.error("VerifyTenant", account="acme", password="wrong password")
    await auth("VerifyTenant", account="acme", password=PASSWORD)
    text = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    for secret in ("tiny", "wrong password", PASSWORD):
        assert secret not in text
    assert "acme" in text


# UpdateTenant


async def test_update_tenant_sets_fields(auth):
    await auth.tenant("acme")
    tenant = await auth(
        "UpdateTenant",
        account="acme",
        default_ttl_seconds=600,
        device_policy="multi",
        max_devices=3,
        set_allowed_origins=True,
        allowed_origins=["https://a.example", "https://b.example"],
    )
    assert tenant.default_ttl_seconds == 600
    assert tenant.device_policy == "multi"
    assert tenant.max_devices == 3
    assert list(tenant.allowed_origins) == ["https://a.example", "https://b.example"]
    unchanged = await auth("UpdateTenant", account="acme")
    assert unchanged.device_policy == "multi"
    cleared = await auth("UpdateTenant", account="acme", set_allowed_origins=True)
    assert list(cleared.allowed_origins) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"default_ttl_seconds": 9},
        {"default_ttl_seconds": 30 * 24 * 3600 + 1},
        {"device_policy": "some"},
        {"max_devices": 0},
        {"max_devices": 101},
        {"set_allowed_origins": True, "allowed_origins": ["has space"]},
        {"set_allowed_origins": True, "allowed_origins": [""]},
    ],
)
async def test_update_tenant_rejects_invalid_input(auth, fields):
    await auth.tenant("acme")
    error = await auth.error("UpdateTenant", account="acme", **fields)
    assert error.code == 1001
    assert next(iter(fields)).replace("set_", "") in error.msg


async def test_update_tenant_unknown(auth):
    error = await auth.error("UpdateTenant", account="nobody", max_devices=2)
    assert error.code == 1005


# IssueToken and VerifyToken


async def test_issue_token_defaults(auth):
    await auth.tenant("acme")
    before = int(time.time() * 1000)
    reply = await auth.token("acme", "alice")
    assert reply.user_id == "alice"
    assert reply.app_platform == "web"
    assert len(reply.token) >= 40
    assert before + 43200_000 <= reply.expires_at <= int(time.time() * 1000) + 43200_000


async def test_issue_token_custom_ttl_and_tenant_default(auth):
    await auth.tenant("acme")
    before = int(time.time() * 1000)
    reply = await auth.token("acme", "alice", app_platform="ios", ttl_seconds=60)
    assert reply.app_platform == "ios"
    assert before + 60_000 <= reply.expires_at <= before + 62_000
    await auth("UpdateTenant", account="acme", default_ttl_seconds=120)
    reply = await auth.token("acme", "alice")
    assert before + 120_000 <= reply.expires_at <= int(time.time() * 1000) + 120_000


async def test_issue_token_stores_only_hash(auth):
    await auth.tenant("acme")
    reply = await auth.token("acme", "alice", nickname="Al")
    stored = await auth.db.tokens.find_one({})
    assert stored["_id"] == hashlib.sha256(reply.token.encode()).hexdigest()
    assert reply.token not in str(stored)
    assert stored["tenant"] == "acme"
    assert stored["expires_ms"] == reply.expires_at
    assert stored["expires_at"] is not None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"user_id": "bad user"}, 1002),
        ({"user_id": ""}, 1002),
        ({"user_id": "u", "app_platform": "tv"}, 1001),
        ({"user_id": "u", "nickname": "n" * 257}, 1001),
        ({"user_id": "u", "avatar": "a" * 257}, 1001),
        ({"user_id": "u", "ttl_seconds": 9}, 1001),
        ({"user_id": "u", "ttl_seconds": 30 * 24 * 3600 + 1}, 1001),
        ({"user_id": "u", "ttl_seconds": -5}, 1001),
    ],
)
async def test_issue_token_rejects_invalid_input(auth, fields, code):
    await auth.tenant("acme")
    error = await auth.error("IssueToken", tenant="acme", **fields)
    assert error.code == code


async def test_issue_token_unknown_tenant(auth):
    error = await auth.error("IssueToken", tenant="nobody", user_id="alice")
    assert error.code == 1005


async def test_verify_token_by_token_and_id(auth):
    await auth.tenant("acme")
    await auth(
        "UpdateTenant",
        account="acme",
        device_policy="single",
        max_devices=2,
        set_allowed_origins=True,
        allowed_origins=["https://a.example"],
    )
    reply = await auth.token("acme", "alice", app_platform="pc", nickname="Al", avatar="a.png")
    info = await auth("VerifyToken", token=reply.token)
    assert info.token_id == hashlib.sha256(reply.token.encode()).hexdigest()
    assert info.tenant == "acme"
    assert info.user_id == "alice"
    assert info.app_platform == "pc"
    assert info.nickname == "Al"
    assert info.avatar == "a.png"
    assert info.expires_at == reply.expires_at
    assert info.device_policy == "single"
    assert info.max_devices == 2
    assert list(info.allowed_origins) == ["https://a.example"]
    by_id = await auth("VerifyToken", token_id=info.token_id)
    assert by_id == info


@pytest.mark.parametrize(
    "fields",
    [{}, {"token": ""}, {"token": "no-such-token"}, {"token_id": "ab"}, {"token_id": "0" * 64}],
)
async def test_verify_token_rejects_unknown(auth, fields):
    error = await auth.error("VerifyToken", **fields)
    assert error.code == 1003
    assert error.msg == "invalid or expired token"


async def test_verify_tokens_batch_keeps_each_result(auth):
    await auth.tenant("acme")
    alice = await auth.token("acme", "alice")
    bob = await auth.token("acme", "bob", app_platform="ios")
    reply = await auth.peer.call(
        "VerifyTokens",
        auth_pb2.VerifyTokensRequest(
            requests=[
                auth_pb2.VerifyTokenRequest(token=alice.token),
                auth_pb2.VerifyTokenRequest(token="not-a-token"),
                auth_pb2.VerifyTokenRequest(token=bob.token),
            ]
        ),
    )
    first, unknown, last = reply.results
    assert (first.code, first.info.user_id) == (0, "alice")
    assert (unknown.code, unknown.msg) == (1003, "invalid or expired token")
    assert not unknown.HasField("info")
    assert (last.code, last.info.user_id, last.info.app_platform) == (0, "bob", "ios")


async def test_verify_tokens_batch_larger_than_a_lookup_chunk(auth):
    # The batch spans three lookup queries, and each result lands at its request's index.
    await auth.tenant("acme")
    await auth.tenant("globex")
    count = 2 * TOKEN_LOOKUP_CHUNK + 5
    tokens = []
    for n in range(count):
        tenant = "acme" if n % 2 else "globex"
        tokens.append((tenant, f"u{n}", (await auth.token(tenant, f"u{n}")).token))
    requests = []
    for n, (_, _, token) in enumerate(tokens):
        requests.append(auth_pb2.VerifyTokenRequest(token=token if n % 7 else f"bad-{n}"))
    reply = await auth.peer.call("VerifyTokens", auth_pb2.VerifyTokensRequest(requests=requests))
    assert len(reply.results) == count
    for n, result in enumerate(reply.results):
        if n % 7 == 0:
            assert result.code == 1003, n
        else:
            assert (result.code, result.info.tenant, result.info.user_id) == (0, *tokens[n][:2]), n


async def test_verify_token_rejects_expired(auth):
    await auth.tenant("acme")
    reply = await auth.token("acme", "alice")
    past = int(time.time() * 1000) - 1
    await auth.db.tokens.update_one({}, {"$set": {"expires_ms": past}})
    error = await auth.error("VerifyToken", token=reply.token)
    assert error.code == 1003
    assert reply.token not in error.msg


# RevokeTokens


async def test_revoke_tokens_all_or_one_platform(auth):
    await auth.tenant("acme")
    web = await auth.token("acme", "alice", app_platform="web")
    ios = await auth.token("acme", "alice", app_platform="ios")
    android = await auth.token("acme", "alice", app_platform="android")
    bob = await auth.token("acme", "bob")

    reply = await auth("RevokeTokens", tenant="acme", user_id="alice", app_platform="ios")
    assert reply.revoked == 1
    assert (await auth.error("VerifyToken", token=ios.token)).code == 1003
    assert (await auth("VerifyToken", token=web.token)).user_id == "alice"

    reply = await auth("RevokeTokens", tenant="acme", user_id="alice")
    assert reply.revoked == 2
    for token in (web, android):
        assert (await auth.error("VerifyToken", token=token.token)).code == 1003
    assert (await auth("VerifyToken", token=bob.token)).user_id == "bob"


async def test_revoke_tokens_rejects_invalid_input(auth):
    assert (await auth.error("RevokeTokens", tenant="acme", user_id="bad user")).code == 1002
    error = await auth.error("RevokeTokens", tenant="acme", user_id="u", app_platform="tv")
    assert error.code == 1001


# UpdateTokenTtl


async def test_update_token_ttl_of_one_token(auth):
    await auth.tenant("acme")
    reply = await auth.token("acme", "alice", ttl_seconds=60)
    before = int(time.time() * 1000)
    updated = await auth("UpdateTokenTtl", tenant="acme", ttl_seconds=3600, token=reply.token)
    assert before + 3600_000 <= updated.expires_at <= int(time.time() * 1000) + 3600_000
    info = await auth("VerifyToken", token=reply.token)
    assert info.expires_at == updated.expires_at
    stored = await auth.db.tokens.find_one({"_id": info.token_id})
    assert stored["expires_ms"] == updated.expires_at


async def test_update_token_ttl_default(auth):
    await auth.tenant("acme")
    reply = await auth("UpdateTokenTtl", tenant="acme", ttl_seconds=900)
    assert reply.default_ttl_seconds == 900
    assert (await auth("GetTenant", account="acme")).default_ttl_seconds == 900
    before = int(time.time() * 1000)
    token = await auth.token("acme", "alice")
    assert before + 900_000 <= token.expires_at <= int(time.time() * 1000) + 900_000


async def test_update_token_ttl_errors(auth):
    await auth.tenant("acme")
    for ttl in (0, 9, 30 * 24 * 3600 + 1):
        error = await auth.error("UpdateTokenTtl", tenant="acme", ttl_seconds=ttl)
        assert error.code == 1001
        assert "ttl_seconds" in error.msg
    error = await auth.error("UpdateTokenTtl", tenant="acme", ttl_seconds=60, token="unknown")
    assert error.code == 1005
    assert "unknown" not in error.msg
    error = await auth.error("UpdateTokenTtl", tenant="nobody", ttl_seconds=60)
    assert error.code == 1005


# Tenant isolation


async def test_tenant_cannot_touch_other_tenant_tokens(auth):
    await auth.tenant("acme")
    await auth.tenant("rival")
    reply = await auth.token("acme", "alice", ttl_seconds=60)

    revoked = await auth("RevokeTokens", tenant="rival", user_id="alice")
    assert revoked.revoked == 0
    error = await auth.error("UpdateTokenTtl", tenant="rival", ttl_seconds=3600, token=reply.token)
    assert error.code == 1005

    info = await auth("VerifyToken", token=reply.token)
    assert info.tenant == "acme"
    assert info.expires_at == reply.expires_at
    rival_token = await auth.token("rival", "alice")
    assert (await auth("VerifyToken", token=rival_token.token)).tenant == "rival"


async def test_profiles_are_per_tenant(auth):
    await auth.tenant("acme")
    await auth.tenant("rival")
    await auth.token("acme", "alice", nickname="Alice", avatar="a.png")
    assert (await auth("GetProfile", tenant="rival", user_id="alice")).nickname == ""


# GetProfile


async def test_get_profile_from_newest_token(auth):
    await auth.tenant("acme")
    await auth.token("acme", "alice", nickname="Al", avatar="1.png")
    await auth.token("acme", "alice", app_platform="ios", nickname="Alice", avatar="2.png")
    profile = await auth("GetProfile", tenant="acme", user_id="alice")
    assert profile.user_id == "alice"
    assert profile.nickname == "Alice"
    assert profile.avatar == "2.png"
    assert await auth.db.profiles.count_documents({}) == 1


async def test_get_profile_unknown_user(auth):
    profile = await auth("GetProfile", tenant="acme", user_id="ghost")
    assert profile.user_id == "ghost"
    assert profile.nickname == ""
    assert profile.avatar == ""
    error = await auth.error("GetProfile", tenant="acme", user_id="bad user")
    assert error.code == 1002


# Service plumbing


async def test_indexes_created(auth):
    tokens = await auth.db.tokens.index_information()
    assert tokens["expires_at_1"]["expireAfterSeconds"] == 3600
    profiles = await auth.db.profiles.index_information()
    assert profiles["tenant_1_user_id_1"]["unique"] is True


async def test_call_without_service_token_rejected(auth):
    stranger = rpc.Peer("auth", auth.peer.target, auth_pb2_grpc.AuthStub, "prim.v1.Auth")
    try:
        with pytest.raises(PrimError) as caught:
            await stranger.call("GetTenant", auth_pb2.GetTenantRequest(account="acme"))
        assert caught.value.code == 1003
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stranger.stub.GetTenant(auth_pb2.GetTenantRequest(account="acme"))
        assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health stays open for probes.
        assert await stranger.check_health()
    finally:
        await stranger.close()


async def test_mongo_unreachable_is_unavailable(db_name):
    dead_url = f"mongodb://127.0.0.1:{devcluster.free_port()}/?directConnection=true"
    async with running_auth(dead_url, db_name) as auth:
        assert await auth.app.check() is False
        error = await auth.error("GetTenant", account="acme")
        assert error.code == 1004


async def test_prim_auth_command_serves_and_stops(mongo_server, db_name, tmp_path):
    port = devcluster.free_port()
    env = {
        "PRIM_LISTEN": f"127.0.0.1:{port}",
        "PRIM_MONGO_URL": mongo_server,
        "PRIM_MONGO_DB": db_name,
        "PRIM_SERVICE_TOKEN": SERVICE_TOKEN,
        "PRIM_LOG_FORMAT": "json",
    }
    process = devcluster.spawn(
        "prim-auth", [devcluster._bin("prim-auth")], port, env=env, log_dir=tmp_path
    )
    try:
        assert await _wait_serving(f"127.0.0.1:{port}")
    finally:
        process.proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(process.proc.wait, 15)
    log_text = process.log_path.read_text()
    assert returncode == 0, log_text
    assert '"stopped"' in log_text
    assert SERVICE_TOKEN not in log_text


async def _wait_serving(target: str, timeout: float = 20.0) -> bool:
    peer = rpc.Peer("auth", target, auth_pb2_grpc.AuthStub, "prim.v1.Auth")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await peer.check_health():
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await peer.close()


def test_prim_auth_rejects_bad_setting():
    env = {**os.environ, "PRIM_DEFAULT_TOKEN_TTL_SECONDS": "5"}
    result = subprocess.run(
        [devcluster._bin("prim-auth")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "PRIM_DEFAULT_TOKEN_TTL_SECONDS" in result.stderr
