"""The worker's life: start vLLM, wait for health, register, heartbeat, drain.

Runs as the batch shell of a lent Slurm job (`exec isense worker ...`), so Slurm's
SIGTERM on preemption or time limit lands here. Every step is logged with a timestamp
to stderr (the job output). No secret is logged or put on a command line.
"""

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import replace

import aiohttp

from isense_slurm.contracts.control import LeaveReason, Registration
from isense_slurm.errors import IsenseError
from isense_slurm.hooks.markers import write_marker
from isense_slurm.worker import vllm_process as vp
from isense_slurm.worker.drain import StopResult, drain, stop_vllm
from isense_slurm.worker.plan import WorkerPlan
from isense_slurm.worker.registration import GatewayClient, RegistrationRefused, UnknownWorker
from isense_slurm.worker.start_phases import process_started_at, vllm_durations

log = logging.getLogger("isense.worker")

LOG_TAIL_LINES = 40
KILL_GRACE_SECONDS = 2.0  # SIGTERM -> SIGKILL for vLLM's group
UNHEALTHY_BEATS = 2  # /health failures in a row that end a serving worker
PROBE_TIMEOUT_MIN = 60.0  # the first completion may compile kernels: slow on a busy host


class VllmFailed(IsenseError):
    """vLLM never became healthy or died while serving."""

    exit_code = 3


class RegistrationFailed(IsenseError):
    """The gateway refused the worker (bad credential, unknown model)."""

    exit_code = 4


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d isense-worker: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def run_worker(plan: WorkerPlan) -> int:
    code = asyncio.run(_serve(plan))
    if code == 0 and not plan.identity.in_slurm:
        # A development run's temp dir: kept only when something went wrong.
        shutil.rmtree(plan.log_path.parent, ignore_errors=True)
    return code


def _exit_now(code: int) -> None:
    """End the process at once, skipping asyncio.run's and the interpreter's teardown:
    they join executor threads, and one blocked there held a reclaimed worker's job
    (and so the training job waiting for its GPUs) for 300 ms and more. Nothing is
    left to clean: vLLM is reaped and the gateway told."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a broken pipe, a closed stream: must not keep us here
            pass
    os._exit(code)


def _print_tail(vllm: vp.VllmProcess) -> None:
    lines = vllm.tail(LOG_TAIL_LINES)
    print(f"----- last {len(lines)} lines of {vllm.log_path} -----", file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    print("----- end of vLLM log -----", file=sys.stderr, flush=True)


async def _wait_healthy(session, plan: WorkerPlan) -> float:
    t0 = time.monotonic()
    while not await vp.is_healthy(session, plan.local_url):
        if time.monotonic() - t0 > plan.startup_timeout:
            raise TimeoutError
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


class _Stopped(Exception):
    """A signal came while the worker was starting: drain instead of going on."""


class VllmUnhealthy(Exception):
    """vLLM's process lives but its /health stopped answering 200 (a dead engine)."""


async def _heartbeat_loop(gw: GatewayClient, plan: WorkerPlan, session, registration: Registration) -> None:
    """Heartbeat the gateway; check vLLM's /health at each beat, so a vLLM whose engine
    died while its API server lingers is taken out of routing within two beats. A
    gateway that forgot the worker gets the first registration again (start included:
    the ledger keeps a run's first report)."""
    unhealthy = 0
    while True:
        await asyncio.sleep(plan.heartbeat_seconds)
        if await vp.is_healthy(session, plan.local_url):
            unhealthy = 0
        else:
            unhealthy += 1
            log.warning("vLLM /health failed (%d in a row)", unhealthy)
            if unhealthy >= UNHEALTHY_BEATS:
                raise VllmUnhealthy(f"vLLM /health failed {unhealthy} times in a row")
            continue  # no heartbeat for a vLLM that may be dead: the gateway's expiry agrees
        try:
            await gw.heartbeat(plan.identity.job_id)
        except UnknownWorker:
            log.info("gateway does not know this worker (restarted, or timed us out); registering again")
            await gw.register_until_done(registration)
            log.info("registered again")
        except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError) as err:
            log.warning("heartbeat failed: %s", str(err) or type(err).__name__)


async def _first(*tasks: asyncio.Future) -> set:
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    return done


async def _cancel(task: asyncio.Future) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a cancelled task may end in any error: no longer matters
        pass


class _StopSignal:
    """The first SIGTERM, SIGINT or SIGUSR1: which one and when; later ones are logged only.
    SIGUSR1 too: `sbatch --signal=B:USR1@N` warns the batch shell alone (vLLM not), so the
    worker can drain before Slurm's job-wide SIGTERM."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.event = asyncio.Event()
        self.at = 0.0  # time.monotonic() of the first signal
        self.sig: signal.Signals | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self.on_signal, sig)

    def on_signal(self, sig: signal.Signals) -> None:
        if self.event.is_set():
            log.info("%s again; already stopping", sig.name)
            return
        self.at = time.monotonic()
        self.sig = sig
        log.info("%s received: deregistering, then draining (budget %g s)", sig.name, self.plan.drain_seconds)
        if sig == signal.SIGTERM and self.plan.sigterm_marker is not None:
            try:  # the epilog reads it: "stopped by Slurm", and when
                write_marker(self.plan.sigterm_marker, time.time())
            except OSError as err:
                log.warning("cannot write %s: %s", self.plan.sigterm_marker, err.strerror)
        self.event.set()


class _Life:
    """One started vLLM's life with the gateway: health, first completion, registration,
    heartbeat, then a drain, a fast reclaim or a failure. Holds what the steps share."""

    def __init__(
        self,
        plan: WorkerPlan,
        vllm: vp.VllmProcess,
        session: aiohttp.ClientSession,
        stop: _StopSignal,
        exited: asyncio.Future,
        stopped: asyncio.Future,
        t_start: float,
        phases: dict[str, float],
    ) -> None:
        self.plan, self.vllm, self.session, self.stop = plan, vllm, session, stop
        self.exited, self.stopped, self.t_start = exited, stopped, t_start
        self.gw = GatewayClient(session, plan.gateway_url, plan.token)
        self.register_tried = False
        # Wall times of the start's steps, sent with the registration (for the ledger).
        self.phases = phases
        self.registration: Registration = plan.registration

    async def run(self) -> int:
        try:
            register = await self._start_up()
        except _Stopped:
            return await self._drain()
        plan = self.plan
        if register.exception() is not None:
            raise RegistrationFailed(f"gateway {plan.gateway_url} refused registration: {register.exception()}")
        attempts = register.result()
        log.info(
            "registered with %s as %s (%.1f s after start, %d attempt%s)",
            plan.gateway_url,
            plan.registration.url,
            time.monotonic() - self.t_start,
            attempts,
            "" if attempts == 1 else "s",
        )
        return await self._serving()

    async def _start_up(self) -> asyncio.Future:
        """Steps 1-2; returns the registration's task. A signal meanwhile raises _Stopped."""
        plan, vllm = self.plan, self.vllm
        # 1. Health.
        health = await self._step(_wait_healthy(self.session, plan), " before becoming healthy")
        if health.exception() is not None:
            await self._fail(
                f"vLLM not healthy after {plan.startup_timeout:g} s "
                f"(worker.startup_timeout_seconds; log: {vllm.log_path})"
            )
        self.phases["healthy"] = time.time()
        log.info("vLLM healthy at %s after %.1f s", plan.local_url, health.result())

        # 1b. One real completion: /health alone does not prove vLLM can serve.
        probe = await self._step(
            vp.probe_completion(
                self.session,
                plan.local_url,
                plan.model.name,
                plan.env["VLLM_API_KEY"],
                timeout=max(PROBE_TIMEOUT_MIN, plan.startup_timeout - (time.monotonic() - self.t_start)),
            ),
            " on its first completion",
        )
        if probe.exception() is not None:
            await self._fail(
                f"vLLM is healthy but failed its first completion: {probe.exception()} (log: {vllm.log_path})"
            )
        self.phases["probed"] = time.time()
        log.info("vLLM answered a first completion in %.2f s", probe.result())

        # 2. Registration, with how the start went.
        self.phases.update(vllm_durations(vllm.log_path, vllm.log_offset))
        self.register_tried = True
        self.registration = replace(plan.registration, start=dict(self.phases))
        return await self._step(self.gw.register_until_done(self.registration), "")

    async def _serving(self) -> int:
        """3. Serving: heartbeat until a signal, vLLM's death or a refusal."""
        plan, vllm = self.plan, self.vllm
        heartbeat = asyncio.ensure_future(_heartbeat_loop(self.gw, plan, self.session, self.registration))
        done = await _first(heartbeat, self.exited, self.stopped)
        await _cancel(heartbeat)  # before deregistering: no re-register after it
        if self.stopped in done:
            return await self._drain()
        if self.exited in done:
            await self._fail(f"vLLM died while serving (exit code {vllm.proc.returncode}; log: {vllm.log_path})")
        err = heartbeat.exception()
        if isinstance(err, VllmUnhealthy):
            await self._fail(f"{err} while serving (log: {vllm.log_path})")
        if isinstance(err, RegistrationRefused):
            raise RegistrationFailed(f"gateway {plan.gateway_url} refused registration: {err}")
        raise IsenseError(f"heartbeat loop ended: {err}")

    async def _step(self, coro, during: str) -> asyncio.Future:
        """Run one start-up step until it ends; a signal meanwhile raises _Stopped
        (drain instead), vLLM exiting meanwhile fails the worker."""
        task = asyncio.ensure_future(coro)
        done = await _first(task, self.exited, self.stopped)
        if self.stopped in done:
            await _cancel(task)
            raise _Stopped
        if self.exited in done:
            await _cancel(task)
            await self._fail(f"vLLM exited with code {self.vllm.proc.returncode}{during} (log: {self.vllm.log_path})")
        return task

    async def _deregister(self, timeout: float) -> bool:
        if self.register_tried:  # a register request may have landed: take it back
            await self.gw.deregister(self.plan.identity.job_id, LeaveReason.SIGTERM, timeout=timeout)
        return self.register_tried

    def _in_flight(self, timeout: float):
        return vp.in_flight(self.session, self.plan.local_url, timeout)

    async def _stop_vllm(self, busy: bool) -> StopResult:
        vllm = self.vllm
        result = await stop_vllm(
            busy=busy,
            in_flight=self._in_flight,
            signal_engines=vllm.signal_engines,
            signal_group=vllm.signal_group,
            group_alive=vllm.group_alive,
            grace=KILL_GRACE_SECONDS,
        )
        vllm.stopped = True
        await vllm.reap()
        return result

    async def _drain(self) -> int:
        if self.stop.sig == signal.SIGTERM and self.plan.identity.in_slurm and self.plan.fast_reclaim:
            return await self._reclaim_fast()
        await drain(
            started_at=self.stop.at,
            drain_seconds=self.plan.drain_seconds,
            deregister=self._deregister,
            in_flight=self._in_flight,
            vllm_exited=lambda: self.vllm.exited,
            stop=self._stop_vllm,
        )
        log.info("exiting 0, %.3f s after the signal", time.monotonic() - self.stop.at)
        return 0

    async def _reclaim_fast(self) -> int:
        # Slurm's SIGTERM went to every process of the job, vLLM included: it is
        # already aborting, and a busy vLLM hangs in its shutdown until SIGKILL.
        # Waiting only keeps training from its GPUs, so: deregister (bounded),
        # kill the group, exit. The gateway retries the cut requests elsewhere.
        try:
            await asyncio.wait_for(self._deregister(0.3), timeout=0.4)
            log.info("deregistered (reason: sigterm)")
        except Exception as err:  # noqa: BLE001 - whatever the gateway did, kill vLLM now; heartbeat expiry covers it
            log.warning("deregister failed: %s", str(err) or type(err).__name__)
        reaped = self.vllm.kill_group()
        self.vllm.stopped = True
        await self.vllm.reap()
        log.info(
            "exiting 0, %.3f s after Slurm's SIGTERM (vLLM killed; the memory of %d of its processes freed here)",
            time.monotonic() - self.stop.at,
            reaped,
        )
        _exit_now(0)
        return 0  # not reached

    async def _fail(self, message: str) -> None:
        if self.register_tried:
            try:
                await self.gw.deregister(self.plan.identity.job_id, LeaveReason.FAILED, timeout=2.0)
                log.info("deregistered (reason: failed)")
            except Exception as err:  # noqa: BLE001 - must not hide why vLLM failed; the gateway times us out anyway
                log.warning("deregister failed: %s", str(err) or type(err).__name__)
        if self.vllm.group_alive():
            await self._stop_vllm(busy=False)
        _print_tail(self.vllm)
        raise VllmFailed(message)


def _log_start(plan: WorkerPlan) -> None:
    ident = plan.identity
    log.info("job %s on node %s, GPUs '%s', model %s", ident.job_id, ident.node, ident.gpus or "-", plan.model.name)
    log.info("starting vLLM: %s", " ".join(plan.cmd))
    log.info("vLLM log: %s%s", plan.log_path, "" if plan.identity.in_slurm else " (removed after a clean stop)")


async def _serve(plan: WorkerPlan) -> int:
    stop = _StopSignal(plan)
    stop.install(asyncio.get_running_loop())
    _log_start(plan)
    t_start = time.monotonic()
    vllm = await vp.VllmProcess.start(plan.cmd, plan.env, plan.log_path)
    phases = {"vllm_spawned": time.time()}
    worker_up = process_started_at()
    if worker_up is not None:
        phases["worker_up"] = worker_up
    log.info("vLLM started: pid %d (process group %d)", vllm.proc.pid, vllm.pgid)
    problem = vp.lower_session_priority(vllm.proc.pid, plan.nice)
    if problem:
        log.warning("vLLM keeps an equal CPU share with other sessions: %s", problem)
    exited = asyncio.ensure_future(vllm.proc.wait())
    stopped = asyncio.ensure_future(stop.event.wait())
    try:
        async with aiohttp.ClientSession() as session:
            return await _Life(plan, vllm, session, stop, exited, stopped, t_start, phases).run()
    finally:
        # Whatever happened, leave no vLLM process behind. (After a SIGKILL its processes
        # may take a moment to vanish: nothing more to do for them.)
        if not vllm.stopped and vllm.group_alive():
            await stop_vllm(
                busy=False,
                signal_engines=vllm.signal_engines,
                signal_group=vllm.signal_group,
                group_alive=vllm.group_alive,
                grace=KILL_GRACE_SECONDS,
            )
        for task in (exited, stopped):
            await _cancel(task)
