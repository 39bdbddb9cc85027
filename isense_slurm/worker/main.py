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
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from isense_slurm.contracts.control import LeaveReason, Registration
from isense_slurm.errors import IsenseError, UsageError
from isense_slurm.hooks.markers import marker_path, write_marker
from isense_slurm.secrets import load_secret, vllm_api_key, worker_token
from isense_slurm.worker import vllm_process as vp
from isense_slurm.worker.drain import StopResult, drain, stop_vllm
from isense_slurm.worker.identity import WorkerIdentity, identify
from isense_slurm.worker.registration import GatewayClient, RegistrationRefused, UnknownWorker

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


@dataclass(frozen=True)
class WorkerPlan:
    identity: WorkerIdentity
    model: object  # config.ModelConfig
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    local_url: str  # how this worker reaches vLLM
    registration: Registration
    gateway_url: str
    token: str
    startup_timeout: float
    heartbeat_seconds: float
    drain_seconds: float
    # Under Slurm, SIGTERM reaches vLLM too: stop at once instead of draining
    # (drain with `sbatch --signal=B:USR1@N` instead, which reaches the worker alone).
    fast_reclaim: bool = True
    # Where to note the SIGTERM's time for the node epilog (None outside Slurm).
    sigterm_marker: Path | None = None
    nice: int = 0  # vLLM's niceness, also given to its session's autogroup


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d isense-worker: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def vllm_log_path(identity: WorkerIdentity, job_dir: Path) -> Path:
    """In Slurm: beside the job output (<job_dir>/isense-<job_id>.out, the controller's
    choice) as isense-<job_id>.vllm.log; outside Slurm: a fresh temp dir."""
    if identity.in_slurm:
        path = Path(job_dir) / f"isense-{identity.job_id}.vllm.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
            return path
        except OSError as err:
            log.warning("cannot write %s (%s); using a temp dir", path, err.strerror)
    return Path(tempfile.mkdtemp(prefix="isense-worker-")) / "vllm.log"


def plan_worker(cfg, model_name: str, *, job_id: str | None = None, port: int | None = None,
                gateway_url: str | None = None) -> WorkerPlan:
    model = cfg.model(model_name)
    if model is None:
        known = ", ".join(m.name for m in cfg.models) or "none"
        raise UsageError(f"--model: no model '{model_name}' in {cfg.path} (models: {known})")
    secret = load_secret(cfg.secrets.dir)
    identity = identify(job_id=job_id)
    bind_host = cfg.worker.bind_host or "0.0.0.0"
    port = port or vp.free_port(bind_host)
    advertise = cfg.worker.advertise_host or socket.gethostname()
    return WorkerPlan(
        identity=identity,
        model=model,
        cmd=vp.niced(vp.build_command(cfg.worker.vllm_executable, model, bind_host, port), cfg.worker.nice),
        env=vp.build_env(os.environ, cfg.worker.env,
                         vllm_api_key(secret, identity.job_id)),
        log_path=vllm_log_path(identity, cfg.slurm.job_dir),
        local_url=f"http://{vp.local_address(bind_host)}:{port}",
        registration=Registration(
            job_id=identity.job_id, node=identity.node, gpus=identity.gpus,
            model=model.name, url=f"http://{_url_host(advertise)}:{port}",
        ),
        gateway_url=gateway_url or cfg.gateway.advertise_url,
        token=worker_token(secret, identity.job_id),
        startup_timeout=cfg.worker.startup_timeout_seconds,
        heartbeat_seconds=cfg.worker.heartbeat_seconds,
        drain_seconds=cfg.slurm.drain_seconds,
        sigterm_marker=marker_path(cfg.slurm.job_dir, identity.job_id) if identity.in_slurm else None,
        nice=cfg.worker.nice,
    )


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
        except Exception:  # noqa: BLE001 - a closed stream must not keep us here
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


async def _heartbeat_loop(gw: GatewayClient, plan: WorkerPlan, session) -> None:
    """Heartbeat the gateway; check vLLM's /health at each beat, so a vLLM whose engine
    died while its API server lingers is taken out of routing within two beats."""
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
            await gw.register_until_done(plan.registration)
            log.info("registered again")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, RuntimeError) as err:
            log.warning("heartbeat failed: %s", str(err) or type(err).__name__)


async def _first(*tasks: asyncio.Future) -> set:
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    return done


async def _cancel(task: asyncio.Future) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its outcome no longer matters
        pass


async def _serve(plan: WorkerPlan) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    stop_at: list[float] = []
    stop_signal: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            log.info("%s again; already stopping", sig.name)
            return
        stop_at.append(time.monotonic())
        stop_signal.append(sig)
        log.info("%s received: deregistering, then draining (budget %g s)",
                 sig.name, plan.drain_seconds)
        if sig == signal.SIGTERM and plan.sigterm_marker is not None:
            try:  # the epilog reads it: "stopped by Slurm", and when
                write_marker(plan.sigterm_marker, time.time())
            except OSError as err:
                log.warning("cannot write %s: %s", plan.sigterm_marker, err.strerror)
        stopping.set()

    # SIGUSR1 too: `sbatch --signal=B:USR1@N` warns the batch shell alone (vLLM not),
    # so the worker can drain before Slurm's job-wide SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        loop.add_signal_handler(sig, on_signal, sig)

    ident = plan.identity
    log.info("job %s on node %s, GPUs '%s', model %s", ident.job_id, ident.node,
             ident.gpus or "-", plan.model.name)
    log.info("starting vLLM: %s", " ".join(plan.cmd))
    log.info("vLLM log: %s%s", plan.log_path,
             "" if plan.identity.in_slurm else " (removed after a clean stop)")
    t_start = time.monotonic()
    vllm = await vp.VllmProcess.start(plan.cmd, plan.env, plan.log_path)
    log.info("vLLM started: pid %d (process group %d)", vllm.proc.pid, vllm.pgid)
    problem = vp.lower_session_priority(vllm.proc.pid, plan.nice)
    if problem:
        log.warning("vLLM keeps an equal CPU share with other sessions: %s", problem)
    exited = asyncio.ensure_future(vllm.proc.wait())
    stopped = asyncio.ensure_future(stopping.wait())
    register_tried = False
    try:
        async with aiohttp.ClientSession() as session:
            gw = GatewayClient(session, plan.gateway_url, plan.token)

            async def deregister(timeout: float) -> bool:
                if register_tried:  # a register request may have landed: take it back
                    await gw.deregister(ident.job_id, LeaveReason.SIGTERM, timeout=timeout)
                return register_tried

            def in_flight(timeout: float):
                return vp.in_flight(session, plan.local_url, timeout)

            async def stop(busy: bool) -> StopResult:
                result = await stop_vllm(
                    busy=busy, in_flight=in_flight, signal_engines=vllm.signal_engines,
                    signal_group=vllm.signal_group, group_alive=vllm.group_alive,
                    grace=KILL_GRACE_SECONDS)
                vllm.stopped = True
                await vllm.reap()
                return result

            async def reclaim_fast() -> int:
                # Slurm's SIGTERM went to every process of the job, vLLM included: it is
                # already aborting, and a busy vLLM hangs in its shutdown until SIGKILL.
                # Waiting only keeps training from its GPUs, so: deregister (bounded),
                # kill the group, exit. The gateway retries the cut requests elsewhere.
                try:
                    await asyncio.wait_for(deregister(0.3), timeout=0.4)
                    log.info("deregistered (reason: sigterm)")
                except Exception as err:  # noqa: BLE001 - heartbeat expiry covers it
                    log.warning("deregister failed: %s", str(err) or type(err).__name__)
                vllm.signal_group(signal.SIGKILL)
                vllm.stopped = True
                await vllm.reap()
                log.info("exiting 0, %.3f s after Slurm's SIGTERM (vLLM killed)",
                         time.monotonic() - stop_at[0])
                _exit_now(0)
                return 0  # not reached

            async def do_drain() -> int:
                if stop_signal[0] == signal.SIGTERM and ident.in_slurm and plan.fast_reclaim:
                    return await reclaim_fast()
                await drain(
                    started_at=stop_at[0],
                    drain_seconds=plan.drain_seconds,
                    deregister=deregister,
                    in_flight=in_flight,
                    vllm_exited=lambda: vllm.exited,
                    stop=stop,
                )
                log.info("exiting 0, %.3f s after the signal", time.monotonic() - stop_at[0])
                return 0

            async def fail(message: str) -> None:
                if register_tried:
                    try:
                        await gw.deregister(ident.job_id, LeaveReason.FAILED, timeout=2.0)
                        log.info("deregistered (reason: failed)")
                    except Exception as err:  # noqa: BLE001 - the gateway times us out anyway
                        log.warning("deregister failed: %s", str(err) or type(err).__name__)
                if vllm.group_alive():
                    await stop(busy=False)
                _print_tail(vllm)
                raise VllmFailed(message)

            async def start_step(coro, during: str) -> asyncio.Future:
                """Run one start-up step until it ends; a signal meanwhile raises _Stopped
                (drain instead), vLLM exiting meanwhile fails the worker."""
                task = asyncio.ensure_future(coro)
                done = await _first(task, exited, stopped)
                if stopped in done:
                    await _cancel(task)
                    raise _Stopped
                if exited in done:
                    await _cancel(task)
                    await fail(f"vLLM exited with code {vllm.proc.returncode}{during} (log: {vllm.log_path})")
                return task

            try:
                # 1. Health.
                health = await start_step(_wait_healthy(session, plan), " before becoming healthy")
                if health.exception() is not None:
                    await fail(f"vLLM not healthy after {plan.startup_timeout:g} s "
                               f"(worker.startup_timeout_seconds; log: {vllm.log_path})")
                log.info("vLLM healthy at %s after %.1f s", plan.local_url, health.result())

                # 1b. One real completion: /health alone does not prove vLLM can serve.
                probe = await start_step(vp.probe_completion(
                    session, plan.local_url, plan.model.name, plan.env["VLLM_API_KEY"],
                    timeout=max(PROBE_TIMEOUT_MIN, plan.startup_timeout - (time.monotonic() - t_start))),
                    " on its first completion")
                if probe.exception() is not None:
                    await fail(f"vLLM is healthy but failed its first completion: {probe.exception()} "
                               f"(log: {vllm.log_path})")
                log.info("vLLM answered a first completion in %.2f s", probe.result())

                # 2. Registration.
                register_tried = True
                register = await start_step(gw.register_until_done(plan.registration), "")
            except _Stopped:
                return await do_drain()
            if register.exception() is not None:
                raise RegistrationFailed(f"gateway {plan.gateway_url} refused registration: "
                                         f"{register.exception()}")
            attempts = register.result()
            log.info("registered with %s as %s (%.1f s after start, %d attempt%s)",
                     plan.gateway_url, plan.registration.url, time.monotonic() - t_start,
                     attempts, "" if attempts == 1 else "s")

            # 3. Serving: heartbeat until a signal, vLLM's death or a refusal.
            heartbeat = asyncio.ensure_future(_heartbeat_loop(gw, plan, session))
            done = await _first(heartbeat, exited, stopped)
            await _cancel(heartbeat)  # before deregistering: no re-register after it
            if stopped in done:
                return await do_drain()
            if exited in done:
                await fail(f"vLLM died while serving (exit code {vllm.proc.returncode}; "
                           f"log: {vllm.log_path})")
            err = heartbeat.exception()
            if isinstance(err, VllmUnhealthy):
                await fail(f"{err} while serving (log: {vllm.log_path})")
            if isinstance(err, RegistrationRefused):
                raise RegistrationFailed(f"gateway {plan.gateway_url} refused registration: {err}")
            raise IsenseError(f"heartbeat loop ended: {err}")
    finally:
        # Whatever happened, leave no vLLM process behind. (After a SIGKILL its processes
        # may take a moment to vanish: nothing more to do for them.)
        if not vllm.stopped and vllm.group_alive():
            await stop_vllm(busy=False, signal_engines=vllm.signal_engines,
                            signal_group=vllm.signal_group, group_alive=vllm.group_alive,
                            grace=KILL_GRACE_SECONDS)
        for task in (exited, stopped):
            await _cancel(task)
