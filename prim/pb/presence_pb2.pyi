from prim.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectRequest(_message.Message):
    __slots__ = ("user", "device_policy", "max_devices", "ttl_seconds")
    USER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    user: _common_pb2.User
    device_policy: str
    max_devices: int
    ttl_seconds: int
    def __init__(self, user: _Optional[_Union[_common_pb2.User, _Mapping]] = ..., device_policy: _Optional[str] = ..., max_devices: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ConnectReply(_message.Message):
    __slots__ = ("replaced",)
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    replaced: _containers.RepeatedCompositeFieldContainer[_common_pb2.Location]
    def __init__(self, replaced: _Optional[_Iterable[_Union[_common_pb2.Location, _Mapping]]] = ...) -> None: ...

class ConnectBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ConnectRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ConnectRequest, _Mapping]]] = ...) -> None: ...

class ConnectResult(_message.Message):
    __slots__ = ("reply", "code", "msg")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    reply: ConnectReply
    code: int
    msg: str
    def __init__(self, reply: _Optional[_Union[ConnectReply, _Mapping]] = ..., code: _Optional[int] = ..., msg: _Optional[str] = ...) -> None: ...

class ConnectBatchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ConnectResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ConnectResult, _Mapping]]] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "conn_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    conn_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., conn_id: _Optional[str] = ...) -> None: ...

class DisconnectReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class DisconnectBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DisconnectRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DisconnectRequest, _Mapping]]] = ...) -> None: ...

class DisconnectResult(_message.Message):
    __slots__ = ("reply", "code", "msg")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    reply: DisconnectReply
    code: int
    msg: str
    def __init__(self, reply: _Optional[_Union[DisconnectReply, _Mapping]] = ..., code: _Optional[int] = ..., msg: _Optional[str] = ...) -> None: ...

class DisconnectBatchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DisconnectResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DisconnectResult, _Mapping]]] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("node_id", "users", "ttl_seconds")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    users: _containers.RepeatedCompositeFieldContainer[_common_pb2.User]
    ttl_seconds: int
    def __init__(self, node_id: _Optional[str] = ..., users: _Optional[_Iterable[_Union[_common_pb2.User, _Mapping]]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class RefreshReply(_message.Message):
    __slots__ = ("refreshed",)
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    refreshed: int
    def __init__(self, refreshed: _Optional[int] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("tenant", "user_ids")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LocateReply(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Location]
    def __init__(self, locations: _Optional[_Iterable[_Union[_common_pb2.Location, _Mapping]]] = ...) -> None: ...

class ListConnectionsRequest(_message.Message):
    __slots__ = ("tenant", "offset", "limit", "user_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    offset: int
    limit: int
    user_id: str
    def __init__(self, tenant: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListConnectionsReply(_message.Message):
    __slots__ = ("total", "users")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    total: int
    users: _containers.RepeatedCompositeFieldContainer[_common_pb2.User]
    def __init__(self, total: _Optional[int] = ..., users: _Optional[_Iterable[_Union[_common_pb2.User, _Mapping]]] = ...) -> None: ...

class NodeMapRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class NodeUsers(_message.Message):
    __slots__ = ("node_id", "users")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    users: _containers.RepeatedCompositeFieldContainer[_common_pb2.User]
    def __init__(self, node_id: _Optional[str] = ..., users: _Optional[_Iterable[_Union[_common_pb2.User, _Mapping]]] = ...) -> None: ...

class NodeMapReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeUsers]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeUsers, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "grpc_addr", "http_addr", "ttl_seconds", "started_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDR_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    grpc_addr: str
    http_addr: str
    ttl_seconds: int
    started_at: int
    def __init__(self, node_id: _Optional[str] = ..., grpc_addr: _Optional[str] = ..., http_addr: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., started_at: _Optional[int] = ...) -> None: ...

class RegisterNodeReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnregisterNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class UnregisterNodeReply(_message.Message):
    __slots__ = ("removed_connections",)
    REMOVED_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    removed_connections: int
    def __init__(self, removed_connections: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...
