"""ASGI application of the Channels peer: WebSocket ``/ws/``, ``GET /stats``."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.channels_app.settings")
django.setup()

# Imported after django.setup(), which these modules need.
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from bench.peers.channels_app.consumers import RelayConsumer
from bench.peers.stats import asgi_stats

application = ProtocolTypeRouter(
    {
        "http": asgi_stats,
        "websocket": URLRouter([path("ws/", RelayConsumer.as_asgi())]),
    }
)
