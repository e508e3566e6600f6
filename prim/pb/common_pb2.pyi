from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("acc_ip", "acc_port", "app_platform", "sys_account", "user_id", "avatar", "nickname", "client_ip", "client_port", "login_time", "heartbeat_time", "log_out_time", "address", "qua", "device_info", "is_logoff", "node_id", "conn_id")
    ACC_IP_FIELD_NUMBER: _ClassVar[int]
    ACC_PORT_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SYS_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PORT_FIELD_NUMBER: _ClassVar[int]
    LOGIN_TIME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    LOG_OUT_TIME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    QUA_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INFO_FIELD_NUMBER: _ClassVar[int]
    IS_LOGOFF_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    acc_ip: str
    acc_port: str
    app_platform: str
    sys_account: str
    user_id: str
    avatar: str
    nickname: str
    client_ip: str
    client_port: str
    login_time: int
    heartbeat_time: int
    log_out_time: int
    address: str
    qua: str
    device_info: str
    is_logoff: bool
    node_id: str
    conn_id: str
    def __init__(self, acc_ip: _Optional[str] = ..., acc_port: _Optional[str] = ..., app_platform: _Optional[str] = ..., sys_account: _Optional[str] = ..., user_id: _Optional[str] = ..., avatar: _Optional[str] = ..., nickname: _Optional[str] = ..., client_ip: _Optional[str] = ..., client_port: _Optional[str] = ..., login_time: _Optional[int] = ..., heartbeat_time: _Optional[int] = ..., log_out_time: _Optional[int] = ..., address: _Optional[str] = ..., qua: _Optional[str] = ..., device_info: _Optional[str] = ..., is_logoff: _Optional[bool] = ..., node_id: _Optional[str] = ..., conn_id: _Optional[str] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("user_id", "nickname", "avatar")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    nickname: str
    avatar: str
    def __init__(self, user_id: _Optional[str] = ..., nickname: _Optional[str] = ..., avatar: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("msg_id", "seq", "time", "sender", "to", "message", "msg_type", "msg_cont_type", "client_msg_id", "broadcast_seq")
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    MSG_CONT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    msg_id: str
    seq: int
    time: int
    sender: Profile
    to: str
    message: str
    msg_type: str
    msg_cont_type: str
    client_msg_id: str
    broadcast_seq: int
    def __init__(self, msg_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[int] = ..., sender: _Optional[_Union[Profile, _Mapping]] = ..., to: _Optional[str] = ..., message: _Optional[str] = ..., msg_type: _Optional[str] = ..., msg_cont_type: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., broadcast_seq: _Optional[int] = ...) -> None: ...

class MessagePage(_message.Message):
    __slots__ = ("messages", "has_more")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    has_more: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("user_id", "app_platform", "node_id", "conn_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONN_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_platform: str
    node_id: str
    conn_id: str
    def __init__(self, user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., node_id: _Optional[str] = ..., conn_id: _Optional[str] = ...) -> None: ...
