"""MongoDB access of the auth service: tenants, tokens and profiles.

Every query on tokens and profiles carries the tenant, except the lookup of a
token by its hash, which is how the tenant of a token is found. Tokens are
stored only as the hex SHA-256 of the token string.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from prim.errors import Code, PrimError

# A token document stays this long after its expiry before MongoDB's TTL
# monitor deletes it; reads ignore it as soon as it expires.
TOKEN_RETENTION_SECONDS = 3600
# Tenant documents read for token checks are reused for this long, so a change
# of settings or password reaches every replica within this time.
TENANT_CACHE_SECONDS = 2.0
_TENANT_CACHE_MAX = 10_000

# Token hashes per lookup query, and lookup queries in flight per call. An
# edge's VerifyTokens batch holds up to 256 tokens, so 8 queries. The MongoDB
# stand-in used by the tests spends time quadratic in the length of an $in
# list (0.14 ms a token at 20, 0.51 ms at 250).
TOKEN_LOOKUP_CHUNK = 32
TOKEN_LOOKUPS_IN_FLIGHT = 8

SERVER_SELECTION_TIMEOUT_MS = 2000
MAX_POOL_SIZE = 100


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_to_datetime(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


class Store:
    """Tenants, tokens and profiles in one MongoDB database."""

    def __init__(self, url: str, db_name: str):
        self.client: AsyncMongoClient = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            maxPoolSize=MAX_POOL_SIZE,
            appname="prim-auth",
        )
        db = self.client[db_name]
        self.tenants = db["tenants"]
        self.tokens = db["tokens"]
        self.profiles = db["profiles"]
        # account -> (monotonic time the entry expires, tenant document)
        self._tenant_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def ensure_indexes(self) -> None:
        """Create the indexes. Creating an index that exists does nothing."""
        await self.tokens.create_index("expires_at", expireAfterSeconds=TOKEN_RETENTION_SECONDS)
        await self.tokens.create_index(
            [("tenant", ASCENDING), ("user_id", ASCENDING), ("app_platform", ASCENDING)]
        )
        await self.profiles.create_index(
            [("tenant", ASCENDING), ("user_id", ASCENDING)], unique=True
        )

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()

    # Tenants

    async def insert_tenant(self, tenant: dict[str, Any]) -> None:
        try:
            await self.tenants.insert_one(tenant)
        except DuplicateKeyError:
            raise PrimError(
                Code.OPERATION_FAILED, f"account {tenant['_id']!r} already exists"
            ) from None

    async def list_tenants(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Return the number of tenants and one page of them ordered by account.

        The page leaves out the password hashes.
        """
        total = await self.tenants.count_documents({})
        cursor = (
            self.tenants.find({}, {"password_hash": 0})
            .sort("_id", ASCENDING)
            .skip(offset)
            .limit(limit)
        )
        return total, await cursor.to_list()

    async def get_tenant(self, account: str) -> dict[str, Any] | None:
        """Read a tenant from MongoDB and refresh its cache entry."""
        tenant = await self.tenants.find_one({"_id": account})
        if tenant is None:
            self._tenant_cache.pop(account, None)
        else:
            self._cache_tenant(tenant)
        return tenant

    async def get_tenant_cached(self, account: str) -> dict[str, Any] | None:
        """Return a tenant read at most ``TENANT_CACHE_SECONDS`` ago."""
        entry = self._tenant_cache.get(account)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return await self.get_tenant(account)

    def _cache_tenant(self, tenant: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self._tenant_cache) >= _TENANT_CACHE_MAX:
            expired = [key for key, (until, _) in self._tenant_cache.items() if until <= now]
            for key in expired:
                del self._tenant_cache[key]
            if len(self._tenant_cache) >= _TENANT_CACHE_MAX:
                self._tenant_cache.clear()
        self._tenant_cache[tenant["_id"]] = (now + TENANT_CACHE_SECONDS, tenant)

    async def update_tenant(self, account: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Set ``fields`` of a tenant and return the updated tenant, or None when absent."""
        if not fields:
            return await self.get_tenant(account)
        tenant = await self.tenants.find_one_and_update(
            {"_id": account}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        if tenant is None:
            self._tenant_cache.pop(account, None)
        else:
            self._cache_tenant(tenant)
        return tenant

    # Tokens

    async def insert_token(self, token: dict[str, Any]) -> None:
        await self.tokens.insert_one(token)

    async def find_live_token(self, token_id: str) -> dict[str, Any] | None:
        """Return the token with this hash unless it is unknown or expired."""
        return await self.tokens.find_one({"_id": token_id, "expires_ms": {"$gt": now_ms()}})

    async def find_live_tokens(self, token_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Return the live tokens among these hashes, by hash.

        The hashes are looked up TOKEN_LOOKUP_CHUNK at a time, with at most
        TOKEN_LOOKUPS_IN_FLIGHT queries at once.
        """
        chunks = [
            token_ids[start : start + TOKEN_LOOKUP_CHUNK]
            for start in range(0, len(token_ids), TOKEN_LOOKUP_CHUNK)
        ]
        slots = asyncio.Semaphore(TOKEN_LOOKUPS_IN_FLIGHT)
        found: dict[str, dict[str, Any]] = {}
        lookups = [self._find_live_chunk(chunk, slots) for chunk in chunks]
        for tokens in await asyncio.gather(*lookups):
            found.update(tokens)
        return found

    async def _find_live_chunk(
        self, token_ids: list[str], slots: asyncio.Semaphore
    ) -> dict[str, dict[str, Any]]:
        async with slots:
            cursor = self.tokens.find(
                {"_id": {"$in": token_ids}, "expires_ms": {"$gt": now_ms()}},
                batch_size=len(token_ids),
            )
            return {token["_id"]: token async for token in cursor}

    async def delete_tokens(self, tenant: str, user_id: str, app_platform: str = "") -> int:
        query: dict[str, Any] = {"tenant": tenant, "user_id": user_id}
        if app_platform:
            query["app_platform"] = app_platform
        result = await self.tokens.delete_many(query)
        return result.deleted_count

    async def set_token_expiry(self, tenant: str, token_id: str, expires_ms: int) -> bool:
        """Move the expiry of a live token of ``tenant``, and return False when there is none."""
        result = await self.tokens.update_one(
            {"_id": token_id, "tenant": tenant, "expires_ms": {"$gt": now_ms()}},
            {"$set": {"expires_ms": expires_ms, "expires_at": ms_to_datetime(expires_ms)}},
        )
        return result.matched_count == 1

    # Profiles

    async def set_profile(self, tenant: str, user_id: str, nickname: str, avatar: str) -> None:
        query = {"tenant": tenant, "user_id": user_id}
        update = {"$set": {"nickname": nickname, "avatar": avatar, "updated_at": now_ms()}}
        try:
            await self.profiles.update_one(query, update, upsert=True)
        except DuplicateKeyError:
            # Another upsert of the same profile inserted first, so update its document.
            await self.profiles.update_one(query, update)

    async def get_profile(self, tenant: str, user_id: str) -> dict[str, Any] | None:
        return await self.profiles.find_one({"tenant": tenant, "user_id": user_id})
