"""The Starlette application of an edge node: REST routes, ``/acc`` and docs."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from prim.errors import Code, PrimError

from . import rest
from .node import EdgeNode
from .openapi import SCHEMA
from .session import Session

log = logging.getLogger("prim.edge.app")

STATIC_DIR = Path(__file__).parent / "static"
# Swagger UI 5 from the swagger-ui-py package, which reads OpenAPI 3.1. The
# package is only found, not imported: its Python part serves other frameworks.
_swagger = importlib.util.find_spec("swagger_ui")
if _swagger is None:
    raise ImportError("the swagger-ui-py package is missing: pip install swagger-ui-py")
SWAGGER_DIR = Path(_swagger.submodule_search_locations[0]) / "static"

SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prim REST API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null,
  onComplete: () => { document.body.dataset.ready = "1"; }});</script>
</body></html>
"""


async def acc(websocket: WebSocket) -> None:
    node: EdgeNode = websocket.app.state.node
    if node.draining:
        await websocket.close(1012, "server restart")
        return
    await Session(node, websocket).run()


async def openapi(request: Request) -> Response:
    return rest.JSON(SCHEMA)


async def docs(request: Request) -> Response:
    return HTMLResponse(SWAGGER_PAGE)


# The two Swagger UI files the page loads. The package's folder also contains an
# editor and a stock page that loads an example API from the internet.
SWAGGER_FILES = ("swagger-ui.css", "swagger-ui-bundle.js")


async def swagger_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SWAGGER_FILES:
        raise PrimError(Code.NOT_FOUND, f"{name!r} not found")
    return FileResponse(SWAGGER_DIR / name)


# Headers of the console and demo pages: scripts and styles from this edge only,
# WebSockets to any edge node, and no framing, since the console acts with the
# credentials typed into it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def console_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "console.html", headers=PAGE_HEADERS)


async def demo_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "demo.html", headers=PAGE_HEADERS)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def prim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PrimError)
    return rest.error_response(exc)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("request failed", extra={"path": request.url.path}, exc_info=exc)
    return rest.error_response(PrimError(Code.SERVER_ERROR, "server error"))


ROUTES = [
    Route("/sysClient/createSysClient", rest.create_sys_client, methods=["POST"]),
    Route("/sysClient/getSysClient", rest.get_sys_client, methods=["GET"]),
    Route("/sysClient/listSysClients", rest.list_sys_clients, methods=["GET"]),
    Route("/sysClient/getToken", rest.get_token, methods=["POST"]),
    Route("/sysClient/exit", rest.exit_client, methods=["POST"]),
    Route("/sysClient/updateTokenVal", rest.update_token_val, methods=["POST"]),
    Route("/sysClient/updateSettings", rest.update_settings, methods=["POST"]),
    Route("/user/list", rest.user_list, methods=["GET"]),
    Route("/user/online", rest.user_online, methods=["POST"]),
    Route("/user/listUserMaps", rest.list_user_maps, methods=["GET"]),
    Route("/msg/sendMsg", rest.send_msg, methods=["POST"]),
    Route("/msg/getMsg", rest.get_msg, methods=["GET"]),
    Route("/msg/getBroadcast", rest.get_broadcast, methods=["GET"]),
    Route("/system/state", rest.system_state, methods=["GET"]),
    Route("/healthz", rest.healthz, methods=["GET"]),
    Route("/readyz", rest.readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
    Route("/docs/static/{name}", swagger_file, methods=["GET"], include_in_schema=False),
    Route("/console", console_page, methods=["GET"], include_in_schema=False),
    Route("/demo", demo_page, methods=["GET"], include_in_schema=False),
    Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    WebSocketRoute("/acc", acc),
]


def create_app(node: EdgeNode) -> Starlette:
    app = Starlette(
        routes=ROUTES,
        exception_handlers={PrimError: prim_error, Exception: server_error},
    )
    app.state.node = node
    return app


def websocket_shortcut(app: Starlette, rest=None):
    """Serve WebSockets on ``/acc`` past ``app``'s middleware and routing; the rest
    goes to ``rest`` (``app`` itself, or ``app`` wrapped in tracing).

    A connection's task keeps every coroutine between uvicorn and the session
    alive for as long as the connection lasts. Starlette's middleware and
    routing add about ten of them, and they do nothing for ``/acc``, whose
    session handles its own errors.
    """

    other = rest or app

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/acc":
            scope["app"] = app
            await acc(WebSocket(scope, receive, send))
        else:
            await other(scope, receive, send)

    return asgi
