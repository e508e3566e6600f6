"""Validation of ids, text and bounds shared by the edge and the services."""

from __future__ import annotations

import re

from prim.errors import Code, PrimError, invalid

ID_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
PLATFORMS = ("web", "android", "ios", "pc", "mini")
MSG_TYPES = ("info", "sysMsg", "robot")
MSG_CONT_TYPES = ("text", "emoj", "file", "picture", "audio", "video")
# The largest seq a cursor may name: seqs travel as protobuf int64.
SEQ_MAX = 2**63 - 1
TTL_MIN_SECONDS = 10
TTL_MAX_SECONDS = 30 * 24 * 3600
PHONE_PATTERN = re.compile(r"\+?[0-9]{1,20}")
# Tenant settings, checked by the edge (REST names) and by auth (stored values).
DEVICE_POLICIES = ("per-platform", "single", "multi")
MAX_DEVICES_LIMIT = 100
MAX_ORIGINS = 100
ORIGIN_MAX_CHARS = 256
# A browser Origin header: scheme://host[:port], with no path.
ORIGIN_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+")


def check_id(field: str, value: object, code: Code = Code.INVALID_PARAMETER) -> str:
    """Return ``value`` if it is a valid id, else raise naming the field."""
    if not isinstance(value, str):
        raise invalid(field, value, "must be a string", code)
    if not ID_PATTERN.fullmatch(value):
        raise invalid(field, value, "must be 1-64 letters, digits or ._-@", code)
    return value


def check_user_id(field: str, value: object) -> str:
    return check_id(field, value, Code.INVALID_USER_ID)


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(field, value, "must be one of " + ", ".join(choices))
    return value  # type: ignore[return-value]


def check_int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, value, "must be an integer")
    if not low <= value <= high:
        raise invalid(field, value, f"must be between {low} and {high}")
    return value


def check_text(field: str, value: object, max_bytes: int) -> str:
    """Check that ``value`` is a string that encodes to at most ``max_bytes`` of UTF-8."""
    if not isinstance(value, str):
        raise invalid(field, value, "must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid(field, value, "is not valid UTF-8 (lone surrogate)") from None
    if size > max_bytes:
        raise PrimError(Code.TOO_LARGE, f"{field} too large: {size} bytes, maximum {max_bytes}")
    return value
