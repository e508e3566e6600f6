"""Settings of the auth service, read from ``PRIM_*`` environment variables."""

from __future__ import annotations

import urllib.parse

import limits
from limits.storage import SCHEMES

from prim.config import COMMON, METRICS_PORT, MONGO_URL, PREFIX, ConfigError, Setting, Settings
from prim.ids import TTL_MAX_SECONDS, TTL_MIN_SECONDS

from .credentials import storage_uri

SETTINGS: list[Setting] = [
    *COMMON,
    Setting("listen", str, "127.0.0.1:50051", "gRPC listen address (host:port)."),
    METRICS_PORT,
    MONGO_URL,
    Setting("mongo_db", str, "prim", "MongoDB database of the tenants, tokens and profiles."),
    Setting(
        "default_token_ttl_seconds",
        int,
        43200,
        "Token lifetime given to new tenants, in seconds (10 to 2592000).",
    ),
    Setting(
        "login_failures_per_account",
        str,
        "10/minute",
        "Failed tenant logins allowed per account, as a `limits` rate string such as 10/minute.",
    ),
    Setting(
        "login_failures_per_address",
        str,
        "50/minute",
        "Failed tenant logins allowed per client address, as a `limits` rate string.",
    ),
    Setting(
        "rate_limit_storage",
        str,
        "memory://",
        "`limits` storage URI of the login failure counters, such as async+redis://host:port;"
        " memory:// keeps them in this process only.",
        secret=True,
    ),
    Setting(
        "credential_cache_seconds",
        float,
        60.0,
        "Time a verified tenant password is remembered, in seconds; 0 disables the cache.",
    ),
]


def check(settings: Settings) -> None:
    """Raise ConfigError naming the first auth setting whose value cannot be used."""
    ttl = settings.default_token_ttl_seconds
    if not TTL_MIN_SECONDS <= ttl <= TTL_MAX_SECONDS:
        raise _error(
            "default_token_ttl_seconds", ttl, f"must be {TTL_MIN_SECONDS}-{TTL_MAX_SECONDS}"
        )
    for name in ("login_failures_per_account", "login_failures_per_address"):
        try:
            limits.parse(settings[name])
        except ValueError:
            raise _error(name, settings[name], "must be a rate such as 10/minute") from None
    scheme = urllib.parse.urlparse(settings.rate_limit_storage).scheme
    if urllib.parse.urlparse(storage_uri(settings.rate_limit_storage)).scheme not in SCHEMES:
        # Only the scheme is shown, because the URI may contain a password.
        raise _error("rate_limit_storage", scheme + "://...", "unknown `limits` storage scheme")
    if settings.credential_cache_seconds < 0:
        raise _error("credential_cache_seconds", settings.credential_cache_seconds, "must be >= 0")


def _error(name: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"invalid {PREFIX}{name.upper()}={value!r}: {why}")
