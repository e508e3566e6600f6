"""The Channels consumer: one group per user and one group ``all`` for broadcasts."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer


class RelayConsumer(AsyncWebsocketConsumer):
    """``{"to", "m"}`` goes to group ``u.<to>`` as ``{"m"}``; ``{"all": true, "m"}`` to ``all``."""

    async def connect(self):
        query = parse_qs(self.scope["query_string"].decode())
        self.user = query.get("user", [""])[0]
        if not self.user:
            await self.close()
            return
        await self.channel_layer.group_add(f"u.{self.user}", self.channel_name)
        await self.channel_layer.group_add("all", self.channel_name)
        await self.accept()
        await self.send(text_data='{"ready": 1}')

    async def disconnect(self, code):
        if getattr(self, "user", ""):
            await self.channel_layer.group_discard(f"u.{self.user}", self.channel_name)
            await self.channel_layer.group_discard("all", self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        request = json.loads(text_data)
        group = "all" if request.get("all") else f"u.{request['to']}"
        await self.channel_layer.group_send(group, {"type": "relay.message", "m": request["m"]})

    async def relay_message(self, event):
        await self.send(text_data=json.dumps({"m": event["m"]}))
