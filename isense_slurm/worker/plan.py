"""What a worker will run, read from the config: the vLLM command, its environment and
log file, the registration it sends and the gateway it sends it to."""

import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from isense_slurm.contracts.control import Registration
from isense_slurm.errors import UsageError
from isense_slurm.hooks.markers import marker_path
from isense_slurm.secrets import load_secret, vllm_api_key, worker_token
from isense_slurm.worker import vllm_process as vp
from isense_slurm.worker.identity import WorkerIdentity, identify

if TYPE_CHECKING:  # for the annotation only
    from isense_slurm.config.schema import ModelConfig

log = logging.getLogger("isense.worker")


@dataclass(frozen=True)
class WorkerPlan:
    identity: WorkerIdentity
    model: "ModelConfig"
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


def plan_worker(
    cfg, model_name: str, *, job_id: str | None = None, port: int | None = None, gateway_url: str | None = None
) -> WorkerPlan:
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
        env=vp.build_env(os.environ, cfg.worker.env, vllm_api_key(secret, identity.job_id)),
        log_path=vllm_log_path(identity, cfg.slurm.job_dir),
        local_url=f"http://{vp.local_address(bind_host)}:{port}",
        registration=Registration(
            job_id=identity.job_id,
            node=identity.node,
            gpus=identity.gpus,
            model=model.name,
            url=f"http://{_url_host(advertise)}:{port}",
        ),
        gateway_url=gateway_url or cfg.gateway.advertise_url,
        token=worker_token(secret, identity.job_id),
        startup_timeout=cfg.worker.startup_timeout_seconds,
        heartbeat_seconds=cfg.worker.heartbeat_seconds,
        drain_seconds=cfg.slurm.drain_seconds,
        sigterm_marker=marker_path(cfg.slurm.job_dir, identity.job_id) if identity.in_slurm else None,
        nice=cfg.worker.nice,
    )
