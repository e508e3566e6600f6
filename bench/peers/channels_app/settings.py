"""Django settings of the Channels peer; ``BENCH_REDIS_URL`` names the shared Redis."""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
DATABASES: dict = {}
USE_TZ = True
ASGI_APPLICATION = "bench.peers.channels_app.asgi.application"

# channels_redis defaults drop messages without an error under load: a channel
# contains at most 100 messages (capacity) and a message waits at most 60 s
# (expiry). All clients of one process share one Redis list, so capacity is
# per process here, and it is raised far past what a run can queue. Drops that
# still happen are counted by CountingRedisChannelLayer.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "bench.peers.channels_app.layer.CountingRedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")}],
            "capacity": 100_000,
            "expiry": 300,
        },
    }
}
