"""Assembly of the auth service: MongoDB store, credential checks, servicer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

from prim import service
from prim.config import Settings
from prim.pb import auth_pb2, auth_pb2_grpc

from .credentials import CredentialChecker, LoginLimiter, PasswordHasher
from .servicer import AuthServicer
from .settings import check as check_settings
from .store import Store

log = logging.getLogger("prim.auth")

SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name


@dataclasses.dataclass
class App:
    """The servicers of the auth service and the hooks that prim.service.serve runs."""

    store: Store
    servicers: list[tuple[Callable[[Any, Any], None], Any]]
    service_names: list[str]
    indexes_ready: bool = False
    # Result of the last check, so a failure that lasts is logged once.
    mongo_ok: bool = True

    async def check(self) -> bool:
        """Ping MongoDB, and create the indexes if startup could not. Return whether both worked."""
        try:
            await self.store.ping()
            if not self.indexes_ready:
                await self.store.ensure_indexes()
                self.indexes_ready = True
        except PyMongoError as exc:
            if self.mongo_ok:
                log.warning("MongoDB check failed", extra={"error": repr(exc)})
            self.mongo_ok = False
            return False
        self.mongo_ok = True
        return True

    async def close(self) -> None:
        await self.store.close()


async def build(settings: Settings) -> App:
    """Connect to MongoDB and create the servicer.

    Raises ConfigError for an unusable setting. When MongoDB cannot be
    reached yet, the service still starts and :meth:`App.check` creates the
    indexes once MongoDB replies.
    """
    check_settings(settings)
    store = Store(settings.mongo_url, settings.mongo_db)
    limiter = LoginLimiter(
        settings.rate_limit_storage,
        settings.login_failures_per_account,
        settings.login_failures_per_address,
    )
    credentials = CredentialChecker(
        store, PasswordHasher(), limiter, settings.credential_cache_seconds
    )
    servicer = AuthServicer(store, credentials, settings.default_token_ttl_seconds)
    app = App(
        store=store,
        servicers=[(auth_pb2_grpc.add_AuthServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
    )
    await app.check()
    return app


async def run(settings: Settings) -> None:
    app = await build(settings)
    await service.serve(
        "prim-auth",
        settings,
        settings.listen,
        app.servicers,
        app.service_names,
        app.check,
        app.close,
    )
