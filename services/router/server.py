"""Assembly of the router service."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from prim import service
from prim.config import Settings
from prim.pb import presence_pb2_grpc, router_pb2_grpc
from prim.rpc import Peer

from .delivery import EdgeNodes
from .dispatch import Dispatcher
from .locations import LocationCache, start_location_cache
from .servicer import RouterServicer
from .store import MessageStore

SERVICE_NAMES = ["prim.v1.Router"]

log = logging.getLogger("prim.router")


@dataclasses.dataclass
class App:
    servicers: list[tuple[Callable[[Any, Any], None], Any]]
    service_names: list[str]
    store: MessageStore
    presence: Peer
    nodes: EdgeNodes
    servicer: RouterServicer
    locator: LocationCache | None = None

    async def check(self) -> bool:
        # Only MongoDB: without presence, messages are still stored and recovered
        # by sync, so the router keeps accepting them.
        return await self.store.ping()

    async def close(self) -> None:
        await self.servicer.dispatcher.close()
        await self.nodes.close()
        await self.presence.close()
        await self.store.close()
        if self.locator is not None:
            await self.locator.close()


async def build(settings: Settings) -> App:
    store = MessageStore(
        settings.mongo_url, settings.mongo_db, settings.mongo_write_concern, settings.store_batch_max
    )
    await store.start()
    presence = Peer(
        "presence",
        settings.presence_addr,
        presence_pb2_grpc.PresenceStub,
        "prim.v1.Presence",
        service_token=settings.service_token,
        deadline=settings.grpc_deadline_seconds,
    )
    nodes = EdgeNodes(
        presence, settings.service_token, settings.edge_deadline_seconds, settings.node_cache_seconds
    )
    locator = start_location_cache(settings)
    dispatcher = Dispatcher(presence, nodes, locator)
    store.on_commit = dispatcher.submit
    servicer = RouterServicer(store, presence, nodes, dispatcher)
    return App(
        servicers=[(router_pb2_grpc.add_RouterServicer_to_server, servicer)],
        service_names=SERVICE_NAMES,
        store=store,
        presence=presence,
        nodes=nodes,
        servicer=servicer,
        locator=locator,
    )


async def run(settings: Settings) -> None:
    app = await build(settings)
    await service.serve(
        "prim-router",
        settings,
        settings.listen,
        app.servicers,
        app.service_names,
        app.check,
        app.close,
        end_streams=app.servicer.end_streams,
    )
