"""Entry point of the ``prim-auth`` command."""

from __future__ import annotations

import asyncio
import sys

import prim.config
import prim.logs
import prim.telemetry

from .server import run
from .settings import SETTINGS, check


def main() -> None:
    settings = prim.config.load("prim-auth", SETTINGS)
    try:
        check(settings)
    except prim.config.ConfigError as exc:
        print(f"prim-auth: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prim.logs.setup(settings.log_level, settings.log_format)
    prim.telemetry.setup("auth")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
