"""What Slurm tells a node prolog/epilog about the job, read from the environment."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from isense_slurm.contracts.workers import WorkerRule
from isense_slurm.gpu import parse_gpu_list


@dataclass(frozen=True)
class JobFacts:
    job_id: str
    node: str
    user: str
    uid: int | None
    partition: str
    gpus: list[int]
    restart_count: int | None
    exit_code: str | None  # SLURM_JOB_EXIT_CODE (a wait status); epilog only
    exit_code2: str | None  # SLURM_JOB_EXIT_CODE2 "exit:signal"; epilog only
    derived_ec: str | None  # SLURM_JOB_DERIVED_EC; epilog only

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobFacts:
        def number(key: str) -> int | None:
            value = env.get(key, "")
            return int(value) if value.isdigit() else None

        # SLURM_JOB_GPUS holds the node's GPU indices; CUDA_VISIBLE_DEVICES is the fallback.
        gpus = parse_gpu_list(env.get("SLURM_JOB_GPUS") or env.get("CUDA_VISIBLE_DEVICES"))
        return cls(
            job_id=env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "",
            node=env.get("SLURMD_NODENAME") or socket.gethostname(),
            user=env.get("SLURM_JOB_USER", ""),
            uid=number("SLURM_JOB_UID"),
            partition=env.get("SLURM_JOB_PARTITION", ""),
            gpus=gpus,
            restart_count=number("SLURM_JOB_RESTART_COUNT"),
            exit_code=env.get("SLURM_JOB_EXIT_CODE") or None,
            exit_code2=env.get("SLURM_JOB_EXIT_CODE2") or None,
            derived_ec=env.get("SLURM_JOB_DERIVED_EC") or None,
        )

    def is_worker(self, cfg) -> bool:
        """An isense worker: the service account's job in the lend partition (the job name
        is not in the hook's environment)."""
        return WorkerRule.from_config(cfg).is_worker(self.user, self.partition)
