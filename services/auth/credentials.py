"""Tenant passwords: argon2id hashes, the login failure limit and a cache of
successful verifications.

Argon2 hashing is slow by design (time cost 3 and 64 MiB, the argon2-cffi
25.1 defaults), so it runs in a worker thread. The cache spares that cost for
a tenant backend that presents the same password on every REST call. Its key
is an HMAC of the password with a random per-process key, so the process
never stores a password or a fast unsalted hash of one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from typing import Any

import argon2
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from prim.errors import Code, PrimError, Unavailable
from prim.ids import ID_PATTERN

from .store import Store

log = logging.getLogger("prim.auth.credentials")

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128
_CACHE_MAX = 10_000
# Slow verifications of one account run one at a time per process (the locks
# are shared by hash of the account), so parallel guesses cannot all pass the
# failure limit before the first failure counts.
_ACCOUNT_LOCKS = 64
_LIMIT_NAMESPACE = "prim-auth-login"


def invalid_credentials() -> PrimError:
    """Return the same error for an unknown account and for a wrong password."""
    return PrimError(Code.UNAUTHORIZED, "invalid credentials")


class PasswordHasher:
    """Argon2id hashing in worker threads, a bounded number at a time.

    Each hash takes 64 MiB with the argon2-cffi default cost, so the bound also
    caps the memory that a burst of logins can take.
    """

    def __init__(self, max_parallel: int | None = None):
        self._hasher = argon2.PasswordHasher()
        self._slots = asyncio.Semaphore(max_parallel or max(2, os.cpu_count() or 2))
        # Unknown accounts are checked against this hash, so they take as long as known ones.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password. A None hash takes the same time and returns False."""
        async with self._slots:
            ok = await asyncio.to_thread(
                self._verify_sync, password_hash or self._dummy_hash, password
            )
        return ok and password_hash is not None

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            log.error("stored password hash is not an argon2 hash")
            return False


def storage_uri(uri: str) -> str:
    """Turn a synchronous `limits` storage URI (memory://) into its async form."""
    return uri if uri.startswith("async+") else "async+" + uri


class LoginLimiter:
    """Moving-window limits on failed logins, per account and per client address.

    NOTE: a limit is tested before a verification and hit after it fails, so
    failures in flight at the same time (other accounts from one address, or
    other auth processes) can pass a limit by the number in flight.
    """

    def __init__(self, storage: str, per_account: str, per_address: str):
        uri = storage_uri(storage)
        options: dict[str, Any] = {"wrap_exceptions": True}
        if "redis" in uri.split("://", 1)[0]:
            # Use the `redis` package, which prim depends on, because coredis (the
            # limits default) is not installed.
            options["implementation"] = "redispy"
        self.storage = storage_from_string(uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_account: RateLimitItem = parse(per_account)
        self.per_address: RateLimitItem = parse(per_address)

    def _keys(self, account: str, client_addr: str) -> list[tuple[RateLimitItem, str]]:
        # A malformed account cannot exist, so it is counted only against the address.
        keys = []
        if ID_PATTERN.fullmatch(account):
            keys.append((self.per_account, "account:" + account))
        if client_addr:
            keys.append((self.per_address, "address:" + client_addr[:256]))
        return keys

    async def check(self, account: str, client_addr: str) -> None:
        """Raise RATE_LIMITED when either failure limit is used up."""
        try:
            for item, key in self._keys(account, client_addr):
                if await self.limiter.test(item, _LIMIT_NAMESPACE, key):
                    continue
                stats = await self.limiter.get_window_stats(item, _LIMIT_NAMESPACE, key)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise PrimError(
                    Code.RATE_LIMITED,
                    f"too many failed logins for {key.replace(':', ' ', 1)};"
                    f" retry after {retry_after} s",
                    retry_after=retry_after,
                )
        except StorageError as exc:
            raise self._unavailable(exc) from None

    async def record_failure(self, account: str, client_addr: str) -> None:
        try:
            for item, key in self._keys(account, client_addr):
                await self.limiter.hit(item, _LIMIT_NAMESPACE, key)
        except StorageError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: StorageError) -> Unavailable:
        log.error("rate limit storage failed", extra={"error": repr(exc.storage_error)})
        return Unavailable("rate limit storage unavailable")


class CredentialChecker:
    """Verify tenant passwords under the failure limit, with a cache of successes."""

    def __init__(
        self, store: Store, hasher: PasswordHasher, limiter: LoginLimiter, cache_seconds: float
    ):
        self.store = store
        self.hasher = hasher
        self.limiter = limiter
        self.cache_seconds = cache_seconds
        self._hmac_key = secrets.token_bytes(32)
        # (account, HMAC of password) -> (monotonic expiry, password_hash verified then)
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}
        self._locks = [asyncio.Lock() for _ in range(_ACCOUNT_LOCKS)]

    async def verify(self, account: str, password: str, client_addr: str) -> dict[str, Any]:
        """Return the tenant whose password this is, or raise UNAUTHORIZED or RATE_LIMITED."""
        await self.limiter.check(account, client_addr)
        if not ID_PATTERN.fullmatch(account) or len(password) > PASSWORD_MAX_CHARS:
            await self.limiter.record_failure(account, client_addr)
            raise invalid_credentials()

        cache_key = (account, self._digest(password))
        tenant = await self._cached_tenant(cache_key)
        if tenant is not None:
            return tenant

        async with self._locks[hash(account) % _ACCOUNT_LOCKS]:
            # Check again, because failures of the calls that held the lock count now.
            await self.limiter.check(account, client_addr)
            tenant = await self.store.get_tenant(account)
            password_hash = tenant["password_hash"] if tenant else None
            if tenant is None or not await self.hasher.verify(password_hash, password):
                await self.limiter.record_failure(account, client_addr)
                raise invalid_credentials()
        self._remember(cache_key, tenant["password_hash"])
        return tenant

    async def _cached_tenant(self, cache_key: tuple[str, str]) -> dict[str, Any] | None:
        """Return the tenant if this password was verified recently and is still its password."""
        cached = self._cache.get(cache_key)
        if cached is None or cached[0] <= time.monotonic():
            return None
        tenant = await self.store.get_tenant_cached(cache_key[0])
        # A changed password has a new hash, which makes the entry stale.
        if tenant is not None and hmac.compare_digest(tenant["password_hash"], cached[1]):
            return tenant
        self._cache.pop(cache_key, None)
        return None

    def _digest(self, password: str) -> str:
        return hmac.new(self._hmac_key, password.encode(), hashlib.sha256).hexdigest()

    def _remember(self, cache_key: tuple[str, str], password_hash: str) -> None:
        if self.cache_seconds <= 0:
            return
        now = time.monotonic()
        if len(self._cache) >= _CACHE_MAX:
            expired = [key for key, (until, _) in self._cache.items() if until <= now]
            for key in expired:
                del self._cache[key]
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
        self._cache[cache_key] = (now + self.cache_seconds, password_hash)
