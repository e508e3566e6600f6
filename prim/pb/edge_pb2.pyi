from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Push(_message.Message):
    __slots__ = ("tenant", "conn_ids", "frame")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONN_IDS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conn_ids: _containers.RepeatedScalarFieldContainer[str]
    frame: bytes
    def __init__(self, tenant: _Optional[str] = ..., conn_ids: _Optional[_Iterable[str]] = ..., frame: _Optional[bytes] = ...) -> None: ...

class DeliverRequest(_message.Message):
    __slots__ = ("pushes", "trace")
    class TraceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    pushes: _containers.RepeatedCompositeFieldContainer[Push]
    trace: _containers.ScalarMap[str, str]
    def __init__(self, pushes: _Optional[_Iterable[_Union[Push, _Mapping]]] = ..., trace: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeliverReply(_message.Message):
    __slots__ = ("delivered", "accepted")
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    accepted: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, delivered: _Optional[int] = ..., accepted: _Optional[_Iterable[int]] = ...) -> None: ...

class DeliverTenantRequest(_message.Message):
    __slots__ = ("tenant", "frame")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    frame: bytes
    def __init__(self, tenant: _Optional[str] = ..., frame: _Optional[bytes] = ...) -> None: ...

class EdgeKickRequest(_message.Message):
    __slots__ = ("tenant", "conn_ids", "user_id", "app_platform", "reason")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONN_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conn_ids: _containers.RepeatedScalarFieldContainer[str]
    user_id: str
    app_platform: str
    reason: str
    def __init__(self, tenant: _Optional[str] = ..., conn_ids: _Optional[_Iterable[str]] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EdgeKickReply(_message.Message):
    __slots__ = ("closed",)
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    closed: int
    def __init__(self, closed: _Optional[int] = ...) -> None: ...
