from prim.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendRequest(_message.Message):
    __slots__ = ("tenant", "sender", "to", "message", "msg_type", "msg_cont_type", "client_msg_id", "persist", "origin_conn_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    MSG_CONT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_CONN_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sender: _common_pb2.Profile
    to: str
    message: str
    msg_type: str
    msg_cont_type: str
    client_msg_id: str
    persist: bool
    origin_conn_id: str
    def __init__(self, tenant: _Optional[str] = ..., sender: _Optional[_Union[_common_pb2.Profile, _Mapping]] = ..., to: _Optional[str] = ..., message: _Optional[str] = ..., msg_type: _Optional[str] = ..., msg_cont_type: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., persist: _Optional[bool] = ..., origin_conn_id: _Optional[str] = ...) -> None: ...

class SendReply(_message.Message):
    __slots__ = ("msg_id", "seq", "time", "delivered", "broadcast_seq", "duplicate")
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    msg_id: str
    seq: int
    time: int
    delivered: int
    broadcast_seq: int
    duplicate: bool
    def __init__(self, msg_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[int] = ..., delivered: _Optional[int] = ..., broadcast_seq: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SendRequest, _Mapping]]] = ...) -> None: ...

class SendStreamRequest(_message.Message):
    __slots__ = ("id", "requests", "trace")
    class TraceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    id: int
    requests: _containers.RepeatedCompositeFieldContainer[SendRequest]
    trace: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[SendRequest, _Mapping]]] = ..., trace: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SendStreamReply(_message.Message):
    __slots__ = ("id", "results", "draining")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    id: int
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    draining: bool
    def __init__(self, id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("reply", "code", "msg")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    reply: SendReply
    code: int
    msg: str
    def __init__(self, reply: _Optional[_Union[SendReply, _Mapping]] = ..., code: _Optional[int] = ..., msg: _Optional[str] = ...) -> None: ...

class SendBatchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ...) -> None: ...

class BroadcastRequest(_message.Message):
    __slots__ = ("tenant", "sender", "message", "msg_type", "msg_cont_type", "client_msg_id", "persist")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    MSG_CONT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    PERSIST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    sender: _common_pb2.Profile
    message: str
    msg_type: str
    msg_cont_type: str
    client_msg_id: str
    persist: bool
    def __init__(self, tenant: _Optional[str] = ..., sender: _Optional[_Union[_common_pb2.Profile, _Mapping]] = ..., message: _Optional[str] = ..., msg_type: _Optional[str] = ..., msg_cont_type: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., persist: _Optional[bool] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "after_seq", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    after_seq: int
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "peer_id", "before_seq", "after_seq", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    peer_id: str
    before_seq: int
    after_seq: int
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., before_seq: _Optional[int] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class BroadcastHistoryRequest(_message.Message):
    __slots__ = ("tenant", "before_seq", "after_seq", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    before_seq: int
    after_seq: int
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., before_seq: _Optional[int] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class KickRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "app_platform", "targets", "reason")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    app_platform: str
    targets: _containers.RepeatedCompositeFieldContainer[_common_pb2.Location]
    reason: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[_common_pb2.Location, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class KickReply(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: int
    def __init__(self, closed: _Optional[int] = ...) -> None: ...
