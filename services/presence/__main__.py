"""``prim-presence``: run the presence service."""

from __future__ import annotations

import asyncio

import uvloop
import logging

from prim import telemetry
from prim.config import ConfigError, load
from prim.logs import setup

from .server import run
from .settings import SETTINGS

log = logging.getLogger("prim.presence")


def main() -> None:
    settings = load("prim-presence", SETTINGS)
    setup(settings.log_level, settings.log_format)
    telemetry.setup("presence")
    try:
        uvloop.run(run(settings))
    except ConfigError as exc:
        log.error("invalid settings", extra={"error": str(exc)})
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
