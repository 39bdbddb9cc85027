"""`isense serve`: the gateway and the controller in one process, on one aiohttp loop.

    HTTP (aiohttp loop)                         controller (threads)
    /v1/*, /internal/workers/*  -> gateway      APScheduler tick: sinfo/squeue -> plan -> sbatch/scancel
    /internal/events (hooks)    -> recorder  -> ledger writes, reclaims; gpus_free wakes the tick
    [slurm] submit_wake file    -> make way: scancel the workers a new training job would preempt
    /internal/controller (GET, localhost)       the last plan, one line per decision
    /metrics (GET, loopback)    -> report/metrics: Prometheus, the ledger read off the loop

Without the gateway (--no-gateway) the same port serves only the /internal routes and
/metrics (the ledger's figures, no gateway ones), so the node hooks still reach the
controller.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable

from aiohttp import web

from isense_slurm.controller.agent import Agent
from isense_slurm.controller.events import make_events_route
from isense_slurm.controller.make_way import SubmitWatcher
from isense_slurm.controller.recorder import EventRecorder
from isense_slurm.errors import IsenseError
from isense_slurm.http.metrics_route import metrics_routes

log = logging.getLogger("isense.controller")

LOCAL_ADDRESSES = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def controller_routes(agent: Agent, recorder: EventRecorder, secret: bytes) -> list[tuple]:
    async def status(request: web.Request) -> web.Response:
        if request.remote not in LOCAL_ADDRESSES:
            return web.json_response({"error": {"message": "served to localhost only"}}, status=403)
        return web.json_response(agent.status())

    return [
        ("POST", "/internal/events", make_events_route(secret, recorder.on_event)),
        ("GET", "/internal/controller", status),
    ]


async def serve(cfg, slurm, *, host: str, port: int, secret: bytes, with_gateway: bool = True,
                scheduled: Iterable[Callable[[Agent], None]] = (), ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT. `scheduled`: hooks that add periodic jobs (exports) with
    agent.add_cron once the scheduler runs."""
    from isense_slurm.meter.ledger import Ledger

    loop = asyncio.get_running_loop()
    ledger = await loop.run_in_executor(None, Ledger.open, cfg.ledger.path)  # the controller's connection
    agent = Agent(cfg, slurm, ledger=ledger)
    recorder = EventRecorder(slurm, ledger, lend_partition=cfg.slurm.lend_partition,
                             service_account=cfg.slurm.service_account, wake=agent.wake,
                             made_way=agent.way.stopped, submitted_at=agent.way.submitted_at)
    routes = controller_routes(agent, recorder, secret)
    link = writer = None
    if with_gateway:
        from isense_slurm.controller.demand import GatewayDemand
        from isense_slurm.gateway.app import Gateway, create_app
        from isense_slurm.gateway.ledger_link import LedgerLink
        from isense_slurm.meter.writer import RequestWriter

        link = LedgerLink(cfg.ledger.path)
        await link.start()
        writer = RequestWriter(cfg.ledger.path, prices={m.name: m.price for m in cfg.models},
                               operator_share=cfg.revenue.operator_share, currency=cfg.revenue.currency,
                               interval_s=0)
        gateway = Gateway(cfg, secret=secret, writer=writer, ledger=link)
        agent.observer.demand = GatewayDemand(gateway.registry, loop)
        agent.way.outstanding = gateway.registry.outstanding_by_job
        app = create_app(gateway, [*routes, *metrics_routes(cfg, gateway_stats=gateway.registry.snapshot)])
    else:
        app = web.Application()
        for method, path, handler in [*routes, *metrics_routes(cfg)]:
            app.router.add_route(method, path, handler)

    watcher = SubmitWatcher(cfg.slurm.submit_wake, agent.make_way) if cfg.slurm.submit_wake else None
    from isense_slurm.http.protocol import JsonErrorRunner  # JSON bodies for aiohttp's own refusals

    runner = JsonErrorRunner(app, access_log=None, handle_signals=False, shutdown_timeout=30)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
        except OSError as err:
            raise IsenseError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        log.info("listening on %s:%d (%s); lending %s to %s every %g s", host, port,
                 "gateway and controller" if with_gateway else "controller only", ", ".join(cfg.slurm.pools),
                 cfg.slurm.lend_partition, cfg.slurm.tick_seconds)
        agent.start()
        if watcher is not None:
            watcher.start()
        for hook in scheduled:
            hook(agent)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("stopping: no more ticks; finishing requests in flight")
    finally:
        # Off the loop: a running tick may be waiting on the loop for demand counters.
        if watcher is not None:
            await loop.run_in_executor(None, watcher.stop)
        await loop.run_in_executor(None, agent.stop)
        await loop.run_in_executor(None, recorder.close)
        await runner.cleanup()
        if writer is not None:
            await loop.run_in_executor(None, writer.close)
        if link is not None:
            link.close()
        ledger.close()
        log.info("stopped")
