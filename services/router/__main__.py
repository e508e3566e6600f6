"""``prim-router``: start the router service."""

import asyncio

import uvloop

from prim import config, logs, telemetry

from .server import run
from .settings import SETTINGS


def main() -> None:
    settings = config.load("prim-router", SETTINGS)
    logs.setup(settings.log_level, settings.log_format)
    telemetry.setup("router")
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
