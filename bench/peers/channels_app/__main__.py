"""``python -m bench.peers.channels_app --port P --redis-url URL``: one Channels server."""

import argparse
import os
import resource

import uvicorn

from bench.peers.stats import uvicorn_settings

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Django Channels peer under uvicorn.")
    parser.add_argument(
        "--port", type=int, required=True, help="HTTP and WebSocket port on 127.0.0.1"
    )
    parser.add_argument("--redis-url", required=True, help="Redis shared by all servers")
    args = parser.parse_args()
    os.environ["BENCH_REDIS_URL"] = args.redis_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peers.channels_app.settings"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from bench.peers.channels_app.asgi import application

    uvicorn.run(application, host="127.0.0.1", port=args.port, **uvicorn_settings())
