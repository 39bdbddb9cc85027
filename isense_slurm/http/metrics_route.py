"""GET /metrics: report/metrics.py's Prometheus figures, rendered off the event loop,
served to loopback only unless told otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from isense_slurm.http.access import LOOPBACK, Networks
from isense_slurm.http.errors import error_response
from isense_slurm.report.metrics import MetricsSource


def make_metrics_route(
    ledger_path,
    *,
    gateway_stats: Callable[[], Mapping] | None = None,
    model_gpus: Mapping[str, int] | None = None,
    currency: str | None = None,
    allow: Iterable[str] | None = LOOPBACK,
    source: MetricsSource | None = None,
):
    """An aiohttp handler for GET /metrics.

    `gateway_stats`: called on the event loop (the registry is not thread-safe), e.g.
    `gateway.registry.snapshot`; the ledger is read and the answer rendered in the
    default executor, so a scrape never stalls the gateway. `allow`: networks that may
    scrape (CIDR strings; default loopback only, since the daemon's port also faces API
    clients and the figures are the operator's revenue); None allows everyone.
    """
    metrics = source or MetricsSource(ledger_path, model_gpus, currency=currency)
    networks = None if allow is None else Networks(allow)

    async def handle_metrics(request: web.Request) -> web.Response:
        if networks is not None and request.remote not in networks:
            return error_response(403, f"/metrics is not served to {request.remote}")
        stats = gateway_stats() if gateway_stats is not None else None
        accept = ",".join(request.headers.getall("Accept", []))
        body, content_type = await asyncio.get_running_loop().run_in_executor(None, metrics.render, stats, accept)
        return web.Response(body=body, headers={"Content-Type": content_type})

    handle_metrics.source = metrics  # type: ignore[attr-defined]  # tests and bench reach the collectors
    return handle_metrics


def metrics_routes(cfg, gateway_stats: Callable[[], Mapping] | None = None) -> list[tuple]:
    """[("GET", "/metrics", handler)] for a config: its ledger, models and currency;
    `gateway_stats` (Registry.snapshot) where the process runs the gateway."""
    handler = make_metrics_route(
        cfg.ledger.path,
        gateway_stats=gateway_stats,
        model_gpus={m.name: m.gpus for m in cfg.models},
        currency=cfg.revenue.currency,
    )
    return [("GET", "/metrics", handler)]
