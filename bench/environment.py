"""The machine and the software versions that a benchmark result belongs to."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

import psutil

PACKAGES = [
    "prim",
    "grpcio",
    "uvicorn",
    "websockets",
    "pymongo",
    "redis",
    "SecantusDB",
    "python-socketio",
    "python-engineio",
    "channels",
    "channels-redis",
    "Django",
    "picows",
    "uvloop",
    "httptools",
    "psutil",
    "py-spy",
]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    redis_server = shutil.which("redis-server")
    if redis_server:
        output = subprocess.run(
            [redis_server, "--version"], check=False, capture_output=True, text=True
        ).stdout
        found["redis-server"] = next(
            (part.split("=", 1)[1] for part in output.split() if part.startswith("v=")),
            output.strip(),
        )
    return found
