"""`isense serve`'s controller side: the agent, the hook-event recorder and the submit
watcher, wired together; http/server.py serves them beside the gateway.

    HTTP (aiohttp loop, http/app.py)            controller (threads)
    /v1/*, /internal/workers/*  -> gateway      APScheduler tick: sinfo/squeue -> plan -> sbatch/scancel
    /internal/events (hooks)    -> recorder  -> ledger writes, reclaims; gpus_free wakes the tick
    [slurm] submit_wake file    -> make way: scancel the workers a new training job would preempt
    /internal/controller (GET, localhost)       the last plan, one line per decision
    /metrics (GET, loopback)    -> report/metrics: Prometheus, the ledger read off the loop
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from isense_slurm.controller.agent import Agent
from isense_slurm.controller.demand import GatewayDemand
from isense_slurm.gateway.registry import Registry
from isense_slurm.meter.ledger import Ledger
from isense_slurm.reclaim.events import make_events_route
from isense_slurm.reclaim.recorder import EventRecorder
from isense_slurm.reclaim.submit_watch import SubmitWatcher

log = logging.getLogger("isense.controller")


class ControllerDaemon:
    """The controller of `isense serve` (http/app.Controller): built with `open()` on the
    server's loop, started once the port listens, stopped before the app's cleanup.
    `scheduled`: hooks that add periodic jobs (exports) with agent.add_cron once the
    scheduler runs."""

    def __init__(self, cfg, slurm, ledger: Ledger, *, secret: bytes, scheduled: Iterable[Callable[[Agent], None]] = ()):
        self.cfg = cfg
        self.ledger = ledger
        self.agent = agent = Agent(cfg, slurm, ledger=ledger)
        self.recorder = EventRecorder(slurm, ledger, book=agent.reclaims, wake=agent.wake)
        self.events_route = make_events_route(secret, self.recorder.on_event)
        self.watcher = SubmitWatcher(cfg.slurm.submit_wake, agent.make_way) if cfg.slurm.submit_wake else None
        self.scheduled = list(scheduled)

    @classmethod
    async def open(
        cls, cfg, slurm, *, secret: bytes, scheduled: Iterable[Callable[[Agent], None]] = ()
    ) -> ControllerDaemon:
        loop = asyncio.get_running_loop()
        ledger = await loop.run_in_executor(None, Ledger.open, cfg.ledger.path)  # the controller's connection
        return cls(cfg, slurm, ledger, secret=secret, scheduled=scheduled)

    def status(self) -> dict:
        return self.agent.status()

    def use_gateway(self, registry: Registry) -> None:
        """Read demand and requests in flight from the gateway's registry (on its loop)."""
        self.agent.observer.demand = GatewayDemand(registry, asyncio.get_running_loop())
        self.agent.way.outstanding = registry.outstanding_by_job

    def lending(self) -> str:
        slurm = self.cfg.slurm
        return f"lending {', '.join(slurm.pools)} to {slurm.lend_partition} every {slurm.tick_seconds:g} s"

    def start(self) -> None:
        self.agent.start()
        if self.watcher is not None:
            self.watcher.start()
        for hook in self.scheduled:
            hook(self.agent)

    async def stop(self) -> None:
        # Off the loop: a running tick may be waiting on the loop for demand counters.
        loop = asyncio.get_running_loop()
        if self.watcher is not None:
            await loop.run_in_executor(None, self.watcher.stop)
        await loop.run_in_executor(None, self.agent.stop)
        await loop.run_in_executor(None, self.recorder.close)

    def close(self) -> None:
        self.ledger.close()
