"""TLS of internal gRPC, from the ``PRIM_GRPC_TLS_*`` settings.

Every service of one deployment sets the same variables. With a certificate
and key, a process serves gRPC over TLS and dials its peers over TLS. With a
CA bundle as well, servers accept only clients whose certificate chains to
that CA (mutual TLS), and clients accept only servers whose certificate
does. The service token is still checked on top of TLS.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from prim.config import COMMON, Settings

TLS_SETTINGS = [spec for spec in COMMON if spec.name.startswith("grpc_tls_")]


@dataclasses.dataclass(frozen=True)
class GrpcTls:
    """PEM contents of one process's certificate, key and peer CA."""

    cert_chain: bytes
    private_key: bytes
    root_certificates: bytes | None = None
    # Name peers' certificates must carry instead of the host dialled; empty: the host.
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> GrpcTls | None:
        """Read the files the settings name; return None when TLS is off."""
        cert, key = settings.get("grpc_tls_cert", ""), settings.get("grpc_tls_key", "")
        if not cert or not key:
            return None
        ca = settings.get("grpc_tls_ca", "")
        return cls(
            cert_chain=Path(cert).read_bytes(),
            private_key=Path(key).read_bytes(),
            root_certificates=Path(ca).read_bytes() if ca else None,
            server_name=settings.get("grpc_tls_server_name", ""),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=self.root_certificates is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


@functools.cache
def from_environment() -> GrpcTls | None:
    """Return the TLS files named by this process's ``PRIM_GRPC_TLS_*`` variables, read once."""
    return GrpcTls.from_settings(Settings(TLS_SETTINGS))
