"""The JSON shape of a chat message on the wire and the frames that carry it.

The router builds push frames with these helpers and the edge uses the same
shape for ``sync`` and history replies, so a message looks the same however
the client receives it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from prim.pb import common_pb2

_encoder = msgspec.json.Encoder()


def wire_message(
    *,
    msg_id: str,
    seq: int,
    time: int,
    sender: dict[str, str],
    to: str,
    message: str,
    msg_type: str,
    msg_cont_type: str,
    client_msg_id: str,
    broadcast_seq: int = 0,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "msgId": msg_id,
        "seq": seq,
        "time": time,
        "from": sender,
        "to": to,
        "message": message,
        "msgType": msg_type,
        "msgContType": msg_cont_type,
        "clientMsgId": client_msg_id,
    }
    if broadcast_seq:
        data["broadcastSeq"] = broadcast_seq
    return data


def profile_dict(profile: common_pb2.Profile) -> dict[str, str]:
    return {"userId": profile.user_id, "nickname": profile.nickname, "avatar": profile.avatar}


def message_from_proto(message: common_pb2.Message) -> dict[str, Any]:
    return wire_message(
        msg_id=message.msg_id,
        seq=message.seq,
        time=message.time,
        sender=profile_dict(message.sender),
        to=message.to,
        message=message.message,
        msg_type=message.msg_type,
        msg_cont_type=message.msg_cont_type,
        client_msg_id=message.client_msg_id,
        broadcast_seq=message.broadcast_seq,
    )


def push_frame(cmd: str, data: Any, code_msg: str = "ok") -> bytes:
    """Encode an unprompted server frame, whose seq is empty and code 200."""
    return _encoder.encode({"seq": "", "cmd": cmd, "response": {"code": 200, "codeMsg": code_msg, "data": data}})
