"""Tenant documents: input checks, the stored form and the ``Tenant`` message.

A stored tenant has ``_id`` (the account), ``phone_num``, ``password_hash``
(argon2id), ``created_at`` (ms), ``default_ttl_seconds``, ``allowed_origins``,
``device_policy`` and ``max_devices``. The hash never leaves the service.
"""

from __future__ import annotations

from typing import Any

from prim.errors import Code, PrimError, invalid
from prim.ids import (
    DEVICE_POLICIES,
    MAX_DEVICES_LIMIT,
    MAX_ORIGINS,
    ORIGIN_MAX_CHARS,
    PHONE_PATTERN,
    TTL_MAX_SECONDS,
    TTL_MIN_SECONDS,
    check_choice,
    check_int,
)
from prim.pb import auth_pb2

from .credentials import PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS
from .store import now_ms

DEFAULT_DEVICE_POLICY = "per-platform"
DEFAULT_MAX_DEVICES = 5


def not_found(account: str) -> PrimError:
    return PrimError(Code.NOT_FOUND, f"tenant {account!r} not found")


def check_password(password: str) -> None:
    """Check the length only. The error message never contains the password."""
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise PrimError(
            Code.INVALID_PARAMETER,
            f"invalid password: must be {PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters,"
            f" got {len(password)}",
        )


def check_phone(phone_num: str) -> None:
    """Check a phone number: empty, or up to 20 digits after an optional +."""
    if phone_num and not PHONE_PATTERN.fullmatch(phone_num):
        raise invalid("phone_num", phone_num, "must be up to 20 digits, optionally after a +")


def check_origins(origins: list[str]) -> list[str]:
    if len(origins) > MAX_ORIGINS:
        raise invalid("allowed_origins", f"{len(origins)} entries", f"at most {MAX_ORIGINS}")
    for origin in origins:
        if not origin or len(origin) > ORIGIN_MAX_CHARS or any(c.isspace() for c in origin):
            raise invalid(
                "allowed_origins",
                origin,
                f"each origin must be 1-{ORIGIN_MAX_CHARS} characters without spaces",
            )
    return origins


def new_tenant(
    account: str, phone_num: str, password_hash: str, default_ttl_seconds: int
) -> dict[str, Any]:
    return {
        "_id": account,
        "phone_num": phone_num,
        "password_hash": password_hash,
        "created_at": now_ms(),
        "default_ttl_seconds": default_ttl_seconds,
        "allowed_origins": [],
        "device_policy": DEFAULT_DEVICE_POLICY,
        "max_devices": DEFAULT_MAX_DEVICES,
    }


def update_fields(request: auth_pb2.UpdateTenantRequest) -> dict[str, Any]:
    """Check the fields an UpdateTenantRequest sets and return them as a ``$set`` document."""
    fields: dict[str, Any] = {}
    if request.HasField("default_ttl_seconds"):
        fields["default_ttl_seconds"] = check_int(
            "default_ttl_seconds", request.default_ttl_seconds, TTL_MIN_SECONDS, TTL_MAX_SECONDS
        )
    if request.HasField("device_policy"):
        fields["device_policy"] = check_choice(
            "device_policy", request.device_policy, DEVICE_POLICIES
        )
    if request.HasField("max_devices"):
        fields["max_devices"] = check_int("max_devices", request.max_devices, 1, MAX_DEVICES_LIMIT)
    if request.set_allowed_origins:
        fields["allowed_origins"] = check_origins(list(request.allowed_origins))
    return fields


def to_message(tenant: dict[str, Any]) -> auth_pb2.Tenant:
    """Build the Tenant message from a stored tenant, leaving out the password hash."""
    return auth_pb2.Tenant(
        account=tenant["_id"],
        phone_num=tenant.get("phone_num", ""),
        created_at=tenant.get("created_at", 0),
        default_ttl_seconds=tenant.get("default_ttl_seconds", 0),
        allowed_origins=tenant.get("allowed_origins", []),
        device_policy=tenant.get("device_policy", DEFAULT_DEVICE_POLICY),
        max_devices=tenant.get("max_devices", DEFAULT_MAX_DEVICES),
    )
