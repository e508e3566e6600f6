"""Settings read from ``PRIM_*`` environment variables.

Each service declares its settings as a list of :class:`Setting`; the same
list parses the environment, prints ``--help`` and feeds the README table.
A malformed value stops the service at start with the variable's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

PREFIX = "PRIM_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_PARSERS: dict[type, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: float,
    bool: _parse_bool,
    tuple: _parse_list,
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: ``PRIM_<name upper-cased>``."""

    name: str
    type: type
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return PREFIX + self.name.upper()

    def parse(self, environ: Mapping[str, str]) -> Any:
        raw = environ.get(self.env)
        if raw is None:
            return self.default
        try:
            return _PARSERS[self.type](raw)
        except ValueError as exc:
            shown = "<hidden>" if self.secret else repr(raw)
            raise ConfigError(f"invalid {self.env}={shown}: {exc}") from None


class Settings(Mapping[str, Any]):
    """Parsed values of a list of settings, read as attributes or keys."""

    def __init__(self, specs: Iterable[Setting], environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        self._specs = {spec.name: spec for spec in specs}
        self._values = {name: spec.parse(environ) for name, spec in self._specs.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def redacted(self) -> dict[str, Any]:
        """Values safe to log: secrets are replaced by whether they are set."""
        values = {}
        for name, value in self._values.items():
            if self._specs[name].secret:
                value = "<set>" if value else "<unset>"
            values[name] = value
        return values


# Settings every service has.
COMMON = [
    Setting("log_level", str, "INFO", "Log level: DEBUG, INFO, WARNING or ERROR."),
    Setting("log_format", str, "json", "Log format: json (one object a line) or text."),
    Setting(
        "service_token",
        str,
        "",
        "Shared secret that internal gRPC calls carry; empty disables the check.",
        secret=True,
    ),
    Setting("grpc_deadline_seconds", float, 5.0, "Deadline of every internal gRPC call, in seconds."),
    Setting("grace_seconds", float, 5.0, "Time allowed for in-flight calls on SIGTERM, in seconds."),
    Setting(
        "grpc_tls_cert",
        str,
        "",
        "PEM certificate (chain) of this process for internal gRPC; with PRIM_GRPC_TLS_KEY it"
        " turns on TLS for this process's gRPC server and channels. Empty: plaintext.",
    ),
    Setting("grpc_tls_key", str, "", "PEM private key of PRIM_GRPC_TLS_CERT.", secret=True),
    Setting(
        "grpc_tls_ca",
        str,
        "",
        "PEM CA bundle that peers' certificates must chain to; when set, gRPC servers also"
        " require client certificates (mutual TLS). Empty: the system CAs, no client certificates.",
    ),
    Setting(
        "grpc_tls_server_name",
        str,
        "",
        "Name that peers' certificates must carry, when it differs from the host dialled"
        " (edge nodes are dialled by pod IP); empty: the host of each address.",
    ),
]

# The Prometheus port of auth, presence and router. The edge serves /metrics on its HTTP port.
METRICS_PORT = Setting(
    "metrics_port",
    int,
    0,
    "Port of the Prometheus /metrics HTTP server, on the host of PRIM_LISTEN; 0 disables it.",
)
# Shared by the two services that use MongoDB, auth and router.
MONGO_URL = Setting(
    "mongo_url",
    str,
    "mongodb://127.0.0.1:27017/?directConnection=true",
    "MongoDB connection string.",
    secret=True,
)


def help_text(service: str, specs: Iterable[Setting]) -> str:
    lines = [f"{service}: settings come from environment variables.", ""]
    for spec in specs:
        default = "(empty)" if spec.default in ("", ()) else spec.default
        if isinstance(default, tuple):
            default = ",".join(default)
        lines.append(f"  {spec.env:<34} {spec.help} Default: {default}.")
    return "\n".join(lines)


def load(service: str, specs: list[Setting], argv: list[str] | None = None) -> Settings:
    """Parse ``--help`` and the environment; exit with a message on bad values."""
    parser = argparse.ArgumentParser(
        prog=service,
        description=help_text(service, specs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        settings = Settings(specs)
        check_tls_files(settings)
        return settings
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_tls_files(settings: Mapping[str, Any]) -> None:
    """Raise ConfigError unless the gRPC TLS settings name readable files, cert and key together."""
    cert, key = settings.get("grpc_tls_cert", ""), settings.get("grpc_tls_key", "")
    if bool(cert) != bool(key):
        missing = "PRIM_GRPC_TLS_KEY" if cert else "PRIM_GRPC_TLS_CERT"
        raise ConfigError(
            f"{missing} is missing: set PRIM_GRPC_TLS_CERT and PRIM_GRPC_TLS_KEY together"
        )
    for name in ("grpc_tls_cert", "grpc_tls_key", "grpc_tls_ca"):
        path = settings.get(name, "")
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"invalid {PREFIX}{name.upper()}={path!r}: not a readable file")
