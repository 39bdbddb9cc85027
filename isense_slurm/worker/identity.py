"""Who this worker is: job id, node and GPUs, read from Slurm's environment.

Outside Slurm (development) the job id is made up from hostname and pid so that
credentials are still per worker.
"""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerIdentity:
    job_id: str
    node: str
    gpus: str  # as Slurm gives them ("0,1"); "" on a CPU-only host
    in_slurm: bool


def identify(
    env: Mapping[str, str] | None = None,
    job_id: str | None = None,
    hostname: str | None = None,
    pid: int | None = None,
) -> WorkerIdentity:
    env = os.environ if env is None else env
    hostname = hostname or socket.gethostname()
    slurm_job = env.get("SLURM_JOB_ID", "")
    if not job_id:
        job_id = slurm_job or f"local-{hostname}-{pid if pid is not None else os.getpid()}"
    node = env.get("SLURMD_NODENAME") or hostname
    gpus = env.get("SLURM_JOB_GPUS") or env.get("CUDA_VISIBLE_DEVICES") or ""
    return WorkerIdentity(job_id=str(job_id), node=node, gpus=gpus, in_slurm=bool(slurm_job))
