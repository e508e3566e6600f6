"""The frame codec of ``/acc``: parse requests, encode replies and pushes.

A request is ``{"seq": str, "cmd": str, "data": object}``; a reply echoes the
request's ``seq`` and ``cmd`` with ``{"code", "codeMsg", "data"}``. Nothing
here does I/O, so the codec is tested without sockets.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

from prim.errors import Code, PrimError, invalid, shorten

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

CODE_MESSAGES = {
    Code.OK: "ok",
    Code.NOT_LOGGED_IN: "not logged in",
    Code.INVALID_PARAMETER: "invalid parameter",
    Code.INVALID_USER_ID: "invalid user id",
    Code.UNAUTHORIZED: "unauthorized",
    Code.SERVER_ERROR: "server error",
    Code.NOT_FOUND: "not found",
    Code.OPERATION_FAILED: "operation failed",
    Code.UNKNOWN_COMMAND: "unknown command",
    Code.TOO_LARGE: "too large",
    Code.RATE_LIMITED: "rate limited",
    Code.FORBIDDEN: "forbidden",
}


class FrameError(PrimError):
    """A request that cannot be handled, with whatever seq and cmd were readable."""

    def __init__(self, code: Code, msg: str, frame_seq: str = "", cmd: str = ""):
        super().__init__(code, msg)
        self.frame_seq = frame_seq
        self.cmd = cmd


def parse_request(raw: str | bytes) -> tuple[str, str, dict[str, Any]]:
    """Return (seq, cmd, data) of a request frame or raise FrameError."""
    try:
        frame = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _decode_error(raw) from None
    except RecursionError:
        raise FrameError(Code.INVALID_PARAMETER, "invalid frame: nested too deeply") from None
    if not isinstance(frame, dict):
        raise FrameError(
            Code.INVALID_PARAMETER, f"invalid frame: expected a JSON object, got {type(frame).__name__}"
        )
    # A null seq is an absent one, as null is for every optional field.
    frame_seq = frame.get("seq")
    if frame_seq is None:
        frame_seq = ""
    cmd = frame.get("cmd")
    readable_cmd = cmd if isinstance(cmd, str) else ""
    if not isinstance(frame_seq, str):
        raise _invalid_field("seq", frame_seq, "must be a string", "", readable_cmd)
    if not isinstance(cmd, str):
        raise _invalid_field("cmd", cmd, "must be a string", frame_seq)
    data = frame.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _invalid_field("data", data, "must be an object", frame_seq, cmd)
    return frame_seq, cmd, data


def _invalid_field(field: str, value: Any, why: str, frame_seq: str, cmd: str = "") -> FrameError:
    """Build the error for an invalid ``seq``, ``cmd`` or ``data``, worded as other fields' are."""
    error = invalid(field, value, why)
    return FrameError(error.code, error.msg, frame_seq, cmd)


def _decode_error(raw: str | bytes) -> FrameError:
    """Build the error for a frame msgspec could not decode.

    When one value is the fault (a lone surrogate, or a number out of
    range), the error names its field and echoes the frame's seq and cmd.
    """
    found = find_fault(raw, "frame")
    if found is None:
        return FrameError(Code.INVALID_PARAMETER, "invalid frame: not JSON")
    frame, field, detail = found
    frame_seq = cmd = ""
    if isinstance(frame, dict):
        frame_seq, cmd = _readable(frame.get("seq")), _readable(frame.get("cmd"))
        data = frame.get("data")
        # A field of data is named as in the command's other errors, without "data.".
        in_data = _fault(data, "") if isinstance(data, dict) else None
        if in_data is not None:
            field, detail = in_data
    return FrameError(Code.INVALID_PARAMETER, f"invalid {field}{detail}", frame_seq, cmd)


class _OutOfRange:
    """A JSON number msgspec rejects as out of range, kept as written."""

    def __init__(self, literal: str):
        self.literal = literal


class _Object(dict):
    """A JSON object that also keeps every key and value pair, repeated keys included."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        self.pairs = pairs


# Maximum length of an integer that msgspec decodes, in characters, the minus sign
# included. msgspec also rejects integers past a lower sys.get_int_max_str_digits().
_INT_MAX_CHARS = 4300
_SURROGATE = ": not valid UTF-8 (lone surrogate escape)"
# Fields whose values the errors below leave out.
SECRET_FIELDS = frozenset({"password", "token"})


def _parse_float(literal: str) -> float | _OutOfRange:
    value = float(literal)
    return _OutOfRange(literal) if math.isinf(value) else value


def _parse_int(literal: str) -> int | _OutOfRange:
    if len(literal) > _INT_MAX_CHARS:
        return _OutOfRange(literal)
    try:
        return int(literal)
    except ValueError:
        # int() rejects digits past sys.get_int_max_str_digits(), as msgspec does.
        return _OutOfRange(literal)


def find_fault(raw: str | bytes, name: str) -> tuple[Any, str, str] | None:
    """Explain why msgspec rejected a document that is JSON in all but one value.

    Python's json module reads escapes of half a surrogate pair and numbers
    past a float's range, which msgspec rejects. It also reads NaN and
    Infinity, which are rejected here as msgspec rejects them. Return the
    document, the path of the first faulty value and the end of an error
    message about it, such as ``" 1e400: number out of range"``. ``name``
    is the path of a document that is not an object. A document nested
    too deeply to read is named ``name`` with the document None. Return
    None for a document that is not UTF-8 JSON, or has no such value.
    """
    try:
        # Strict UTF-8, as msgspec reads: json.loads would also take UTF-16 and a byte-order mark.
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = json.loads(
            text,
            parse_constant=_reject,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=_Object,
        )
    except ValueError:
        return None
    except RecursionError:
        return None, name, ": nested too deeply"
    found = _fault(document, "" if isinstance(document, dict) else name)
    return None if found is None else (document, *found)


def _fault(document: Any, root: str) -> tuple[str, str] | None:
    """Return the path of the first value in ``document`` that msgspec rejects, and why.

    Keys of nested objects are joined with dots and list positions are
    written ``[i]``, after ``root``. The path and the value are cut to
    ``SHOWN_VALUE_MAX_CHARS``, and the value of a secret field is left out.
    """
    # Depth first, in document order, without recursion: documents may nest deeply.
    # Each entry's place is a link to its parent's (parent, key or index), and a
    # path is spelled out only for the fault, so long keys are not copied per entry.
    # NOTE: under a secret field the path's keys are still shown, only the value is left out.
    stack: list[tuple[Any, tuple | None, bool]] = [(document, None, False)]
    while stack:
        value, place, secret = stack.pop()
        if isinstance(value, _OutOfRange):
            value_text = "" if secret else " " + shorten(value.literal)
            return shorten(_spell(place, root) or "value"), f"{value_text}: number out of range"
        if isinstance(value, str):
            if not _encodes(value):
                return shorten(_spell(place, root) or "value"), _SURROGATE
        elif isinstance(value, _Object):
            children = []
            for key, item in value.pairs:
                if not _encodes(key):
                    return shorten(_spell(place, root) or "key"), _SURROGATE
                children.append((item, (place, key), secret or key in SECRET_FIELDS))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            children = [(item, (place, index), secret) for index, item in enumerate(value)]
            stack.extend(reversed(children))
    return None


def _spell(place: tuple | None, root: str) -> str:
    """Write out a place of ``_fault`` as a path: ``root.key[0].inner``."""
    steps = []
    while place is not None:
        place, step = place
        steps.append(step)
    path = root
    for step in reversed(steps):
        if isinstance(step, int):
            path += f"[{step}]"
        else:
            path = f"{path}.{step}" if path else step
    return path


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _readable(value: object) -> str:
    """Return ``value`` when it is a string that a reply can echo, else an empty string."""
    if isinstance(value, str) and _encodes(value):
        return value
    return ""


def encode_reply(frame_seq: str, cmd: str, code: int, data: Any = None, code_msg: str | None = None) -> bytes:
    if code_msg is None:
        code_msg = CODE_MESSAGES.get(code, "error")
    return _encoder.encode(
        {"seq": frame_seq, "cmd": cmd, "response": {"code": code, "codeMsg": code_msg, "data": data}}
    )


def encode_error(error: PrimError, frame_seq: str = "", cmd: str = "") -> bytes:
    return encode_reply(frame_seq, cmd, int(error.code), None, error.msg)


def user_dict(user) -> dict[str, Any]:
    """Convert a ``prim.v1.User`` into the contract's User record."""
    return {
        "accIp": user.acc_ip,
        "accPort": user.acc_port,
        "appPlatform": user.app_platform,
        "sysAccount": user.sys_account,
        "userId": user.user_id,
        "avatar": user.avatar,
        "nickname": user.nickname,
        "clientIp": user.client_ip,
        "clientPort": user.client_port,
        "loginTime": user.login_time,
        "heartbeatTime": user.heartbeat_time,
        "logOutTime": user.log_out_time,
        "address": user.address,
        "qua": user.qua,
        "deviceInfo": user.device_info,
        "isLogoff": user.is_logoff,
    }
