from prim.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tenant(_message.Message):
    __slots__ = ("account", "phone_num", "created_at", "default_ttl_seconds", "allowed_origins", "device_policy", "max_devices")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    account: str
    phone_num: str
    created_at: int
    default_ttl_seconds: int
    allowed_origins: _containers.RepeatedScalarFieldContainer[str]
    device_policy: str
    max_devices: int
    def __init__(self, account: _Optional[str] = ..., phone_num: _Optional[str] = ..., created_at: _Optional[int] = ..., default_ttl_seconds: _Optional[int] = ..., allowed_origins: _Optional[_Iterable[str]] = ..., device_policy: _Optional[str] = ..., max_devices: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("account", "password", "phone_num")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUM_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    phone_num: str
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ..., phone_num: _Optional[str] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("offset", "limit")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    offset: int
    limit: int
    def __init__(self, offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTenantsReply(_message.Message):
    __slots__ = ("total", "tenants")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    total: int
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, total: _Optional[int] = ..., tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class VerifyTenantRequest(_message.Message):
    __slots__ = ("account", "password", "client_addr")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    client_addr: str
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ..., client_addr: _Optional[str] = ...) -> None: ...

class UpdateTenantRequest(_message.Message):
    __slots__ = ("account", "default_ttl_seconds", "device_policy", "max_devices", "set_allowed_origins", "allowed_origins")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    SET_ALLOWED_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    account: str
    default_ttl_seconds: int
    device_policy: str
    max_devices: int
    set_allowed_origins: bool
    allowed_origins: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account: _Optional[str] = ..., default_ttl_seconds: _Optional[int] = ..., device_policy: _Optional[str] = ..., max_devices: _Optional[int] = ..., set_allowed_origins: _Optional[bool] = ..., allowed_origins: _Optional[_Iterable[str]] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "app_platform", "nickname", "avatar", "ttl_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    app_platform: str
    nickname: str
    avatar: str
    ttl_seconds: int
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., nickname: _Optional[str] = ..., avatar: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class IssueTokenReply(_message.Message):
    __slots__ = ("token", "user_id", "app_platform", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    user_id: str
    app_platform: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class VerifyTokenRequest(_message.Message):
    __slots__ = ("token", "token_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "tenant", "user_id", "app_platform", "nickname", "avatar", "expires_at", "device_policy", "max_devices", "allowed_origins")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    tenant: str
    user_id: str
    app_platform: str
    nickname: str
    avatar: str
    expires_at: int
    device_policy: str
    max_devices: int
    allowed_origins: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token_id: _Optional[str] = ..., tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ..., nickname: _Optional[str] = ..., avatar: _Optional[str] = ..., expires_at: _Optional[int] = ..., device_policy: _Optional[str] = ..., max_devices: _Optional[int] = ..., allowed_origins: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyTokensRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[VerifyTokenRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[VerifyTokenRequest, _Mapping]]] = ...) -> None: ...

class TokenResult(_message.Message):
    __slots__ = ("info", "code", "msg")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    code: int
    msg: str
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., code: _Optional[int] = ..., msg: _Optional[str] = ...) -> None: ...

class VerifyTokensReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TokenResult, _Mapping]]] = ...) -> None: ...

class RevokeTokensRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "app_platform")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    app_platform: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., app_platform: _Optional[str] = ...) -> None: ...

class RevokeTokensReply(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class UpdateTokenTtlRequest(_message.Message):
    __slots__ = ("tenant", "ttl_seconds", "token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    ttl_seconds: int
    token: str
    def __init__(self, tenant: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class UpdateTokenTtlReply(_message.Message):
    __slots__ = ("expires_at", "default_ttl_seconds")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    expires_at: int
    default_ttl_seconds: int
    def __init__(self, expires_at: _Optional[int] = ..., default_ttl_seconds: _Optional[int] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("tenant", "user_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...
