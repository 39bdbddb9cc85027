"""The SIGTERM sequence: deregister, let in-flight requests finish, stop vLLM.

Order matters: deregistering first means the gateway sends nothing new. The drain
budget (cfg.slurm.drain_seconds) counts from the signal; stopping vLLM takes ~0.5 s
and at most `grace` seconds (then SIGKILL), so drain_seconds + grace must stay below
Slurm's KillWait. Requests still running when the budget ends are aborted by vLLM's
engine, which answers each with finish_reason "abort" and the usage so far; the
gateway retries them elsewhere. Why the engine is signalled first: vllm_process.py.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from isense_slurm.worker.vllm_process import NotServing

log = logging.getLogger("isense.worker")

POLL_SECONDS = 0.1
# Idle must be seen this many polls in a row: a request the gateway sent just before
# the deregistration may still be on its way to vLLM.
IDLE_POLLS = 2
# Engine-first abort: time for vLLM to answer the aborted requests (tens of ms seen).
ABORT_WAIT_SECONDS = 1.0
# After SIGKILL: how long to watch the group vanish before exiting anyway.
KILLED_WAIT_SECONDS = 0.5

InFlight = Callable[[float], Awaitable[int | None]]  # timeout -> count; raises NotServing


@dataclass
class StopResult:
    seconds: float
    engine_first: bool  # in-flight requests were aborted by signalling the engine first
    killed: bool  # SIGKILL was needed


@dataclass
class DrainResult:
    deregistered: bool
    deregister_seconds: float
    wait_seconds: float
    left_in_flight: int | None  # None: unknown
    stop: StopResult


async def stop_vllm(
    *,
    busy: bool,
    signal_engines: Callable[[int], None],
    signal_group: Callable[[int], None],
    group_alive: Callable[[], bool],
    grace: float,
    in_flight: InFlight | None = None,  # needed when busy
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> StopResult:
    """Busy: SIGTERM the engine, wait (<= ABORT_WAIT_SECONDS) until the aborted requests
    are answered. Then SIGTERM the group; SIGKILL it `grace` s after the start."""
    t0 = clock()
    if busy and in_flight is not None:
        log.info("SIGTERM to vLLM's engine: it aborts and answers what is in flight")
        signal_engines(signal.SIGTERM)
        while clock() - t0 < min(ABORT_WAIT_SECONDS, grace / 2):
            try:
                if await in_flight(0.2) == 0:
                    break
            except NotServing:
                break
            await sleep(0.02)
    log.info("SIGTERM to vLLM's process group")
    signal_group(signal.SIGTERM)
    killed = False
    while group_alive():
        if clock() - t0 >= grace:
            log.info("SIGKILL to vLLM's process group (alive %.1f s after the stop began)", clock() - t0)
            signal_group(signal.SIGKILL)
            killed = True
            break
        await sleep(0.05)
    if killed:  # gone at once, unless a big process is slow to free its memory
        t_kill = clock()
        while group_alive() and clock() - t_kill < KILLED_WAIT_SECONDS:
            await sleep(0.02)
    return StopResult(clock() - t0, busy, killed)


async def drain(
    *,
    started_at: float,
    drain_seconds: float,
    deregister: Callable[[float], Awaitable[bool]],  # False: was not registered
    in_flight: InFlight,
    vllm_exited: Callable[[], bool],
    stop: Callable[[bool], Awaitable[StopResult]],  # busy -> result
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DrainResult:
    deadline = started_at + drain_seconds

    t0 = clock()
    try:
        # At most 1 s, and never the whole budget: a dead gateway must not eat it.
        deregistered = await deregister(min(1.0, max(0.2, deadline - t0)))
        if deregistered:
            log.info("deregistered from the gateway (%.3f s)", clock() - t0)
    except Exception as err:  # noqa: BLE001 - best effort: the gateway also times us out
        deregistered = False
        log.warning("deregister failed (%s); draining anyway", str(err) or type(err).__name__)
    deregister_seconds = clock() - t0

    t1 = clock()
    count: int | None = None
    idle_seen = 0
    serving = True
    while not vllm_exited() and clock() < deadline:
        try:
            count = await in_flight(min(0.5, deadline - clock()))
        except NotServing:
            serving, count = False, None
            break
        idle_seen = idle_seen + 1 if count == 0 else 0
        if idle_seen >= IDLE_POLLS:
            break
        await sleep(max(0.0, min(POLL_SECONDS, deadline - clock())))
    wait_seconds = clock() - t1

    if vllm_exited() or not serving:
        log.info("vLLM is not serving (stopping already, or not up yet; %.3f s)", wait_seconds)
    elif count == 0:
        log.info("no request in flight (%.3f s)", wait_seconds)
    elif count is None:
        log.info("vLLM's load unreadable for %.3f s; aborting what may be in flight", wait_seconds)
    else:
        log.info("drain budget spent with %d request(s) in flight; aborting them", count)

    busy = serving and not vllm_exited() and count != 0
    result = await stop(busy)
    log.info(
        "vLLM process group stopped (%.3f s%s%s)",
        result.seconds,
        ", engine first" if result.engine_first else "",
        ", SIGKILL needed" if result.killed else "",
    )
    return DrainResult(deregistered, deregister_seconds, wait_seconds, count, result)
