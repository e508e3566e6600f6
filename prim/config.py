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
        return {
            name: ("<set>" if value else "<unset>") if self._specs[name].secret else value
            for name, value in self._values.items()
        }


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
]


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
        return Settings(specs)
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
