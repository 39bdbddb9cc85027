"""serve(): the one server of `isense gateway` and `isense serve`, from listening to a
clean stop.

One process, one aiohttp loop, one port: the gateway (with its ledger link and request
writer, built once here) when asked for, the controller's routes and start/stop when
`isense serve` hands one over, /metrics always. SIGTERM or SIGINT: stop the
controller's ticks, finish the requests in flight, flush the ledger writer, return.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from isense_slurm.errors import IsenseError
from isense_slurm.gateway.front import Gateway
from isense_slurm.http.app import Controller, create_app
from isense_slurm.http.protocol import JsonErrorRunner  # JSON bodies for aiohttp's own refusals

log = logging.getLogger("isense.http")


async def serve(
    cfg,
    *,
    host: str,
    port: int,
    secret: bytes,
    with_gateway: bool = True,
    controller: Controller | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; `ready` is called once the port listens."""
    gateway = await Gateway.open(cfg, secret=secret) if with_gateway else None
    if controller is not None and gateway is not None:
        controller.use_gateway(gateway.registry)
    runner = JsonErrorRunner(
        create_app(cfg, gateway=gateway, controller=controller),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30,
    )
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
        except OSError as err:
            raise IsenseError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        _log_listening(host, port, gateway, controller)
        if controller is not None:
            controller.start()
        await _until_signalled(ready)
        log.info("stopping: %sfinishing requests in flight", "" if controller is None else "no more ticks; ")
    finally:
        if controller is not None:
            await controller.stop()
        await runner.cleanup()
        if gateway is not None:
            await gateway.close()
        if controller is not None:
            controller.close()
        log.info("stopped" if controller is not None else "stopped; ledger rows flushed")


def _log_listening(host: str, port: int, gateway: Gateway | None, controller: Controller | None) -> None:
    if controller is None:
        n = len(gateway.models) if gateway is not None else 0
        log.info("listening on %s:%d (%d model%s)", host, port, n, "" if n == 1 else "s")
    else:
        log.info(
            "listening on %s:%d (%s); %s",
            host,
            port,
            "gateway and controller" if gateway is not None else "controller only",
            controller.lending(),
        )


async def _until_signalled(ready: Callable[[], None] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    await stop.wait()
