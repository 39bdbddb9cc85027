"""The one aiohttp application of `isense gateway` and `isense serve`: every route,
mounted here.

    /v1/chat/completions, /v1/completions, /v1/models   gateway (API key)
    /v1/usage                                            a key's own usage and budgets (API key)
    /internal/workers/{register,heartbeat,deregister}    worker control (worker token)
    /internal/workers (GET, localhost), /health          the registry view, liveness
    /internal/events (POST)                              hook events -> the controller (hook token)
    /internal/controller (GET, localhost)                the controller's last plan
    /metrics (GET, loopback)                             Prometheus (http/metrics_route.py)
    anything else                                        404 in OpenAI's words (with the gateway)

Without the gateway the same app serves the controller's routes and /metrics (the
ledger's figures, no gateway ones), so the node hooks still reach the controller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from aiohttp import web

from isense_slurm.contracts.control import CONTROL_PATH, ControlAction, action_path
from isense_slurm.gateway import control, usage_route
from isense_slurm.gateway.front import INFERENCE_PATHS, Gateway
from isense_slurm.gateway.registry import Registry
from isense_slurm.http.access import is_local
from isense_slurm.http.errors import error_response
from isense_slurm.http.metrics_route import metrics_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Controller(Protocol):
    """The controller's side of `isense serve`, as the server sees it (controller/daemon.py)."""

    events_route: Handler  # POST /internal/events

    def status(self) -> dict[str, Any]: ...  # GET /internal/controller

    def use_gateway(self, registry: Registry) -> None: ...  # demand counters, requests in flight

    def start(self) -> None: ...

    async def stop(self) -> None: ...  # ticks and hooks stopped; before the app's cleanup

    def close(self) -> None: ...  # its ledger; after the app's cleanup

    def lending(self) -> str: ...  # "lending <pools> to <partition> every <n> s", for the log


def create_app(cfg, *, gateway: Gateway | None = None, controller: Controller | None = None) -> web.Application:
    """The app for a config: the gateway's routes when there is one, the controller's when
    there is one, /metrics always (with the gateway's figures when it runs here)."""
    if gateway is None:
        app = web.Application()
    else:
        app = web.Application(client_max_size=gateway.max_body)
        app.cleanup_ctx.append(gateway.background)
        _mount_gateway(app, gateway)
    if controller is not None:
        app.router.add_route("POST", "/internal/events", controller.events_route)
        app.router.add_route("GET", "/internal/controller", partial(_controller_status, controller))
    stats = gateway.registry.snapshot if gateway is not None else None
    for method, path, handler in metrics_routes(cfg, gateway_stats=stats):
        app.router.add_route(method, path, handler)
    if gateway is not None:
        app.router.add_route("*", "/{tail:.*}", gateway.not_found)
    return app


def _mount_gateway(app: web.Application, gateway: Gateway) -> None:
    for path in INFERENCE_PATHS:
        app.router.add_route("*", path, gateway.inference)
    app.router.add_route("*", "/v1/models", gateway.list_models)
    app.router.add_route("*", "/v1/usage", partial(usage_route.usage, gateway))
    for action in ControlAction:
        app.router.add_post(action_path(action), partial(getattr(control, action.value), gateway.control))
    app.router.add_route("*", CONTROL_PATH, partial(control.workers, gateway.control))
    app.router.add_route("*", "/health", partial(control.health, gateway.control))


async def _controller_status(controller: Controller, request: web.Request) -> web.Response:
    if not is_local(request.remote):
        return error_response(403, "served to localhost only")
    return web.json_response(controller.status())
