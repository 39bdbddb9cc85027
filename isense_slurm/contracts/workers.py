"""What a worker job is and how it is named: the one rule every side uses.

A worker is a job of [slurm] service_account in [slurm] lend_partition named
isense-<model>. The node hooks see no job name: for them every job of the service
account in the lend partition counts (name=None); the controller, which reads the name
from Slurm, counts only isense-* jobs (others are the admin's own tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

WORKER_PREFIX = "isense-"


def worker_job_name(model: str) -> str:
    """The Slurm job name of a worker of `model`."""
    return WORKER_PREFIX + model


def is_worker_name(name: str) -> bool:
    return name.startswith(WORKER_PREFIX)


def model_of(job_name: str) -> str:
    """The model a worker job serves, from its name."""
    return job_name.removeprefix(WORKER_PREFIX)


class _SlurmSettings(Protocol):
    @property
    def service_account(self) -> str | None: ...
    @property
    def lend_partition(self) -> str | None: ...


class WorkerRuleConfig(Protocol):
    """What from_config reads of isense's Config (contracts import nothing of ours)."""

    @property
    def slurm(self) -> _SlurmSettings: ...


class NamedJob(Protocol):
    """A job record with .user, .partition and .name (slurm.Job)."""

    @property
    def user(self) -> str | None: ...
    @property
    def partition(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...


@dataclass(frozen=True)
class WorkerRule:
    """[slurm] service_account and lend_partition: which jobs are workers."""

    service_account: str | None
    lend_partition: str | None

    @classmethod
    def from_config(cls, cfg: WorkerRuleConfig) -> WorkerRule:
        return cls(cfg.slurm.service_account, cfg.slurm.lend_partition)

    def is_worker(self, user: str | None, partition: str | None, name: str | None = None) -> bool:
        """Whether a job is a worker; `name` None: not known (the node hooks)."""
        return (
            self.lend_partition is not None
            and partition == self.lend_partition
            and user == self.service_account
            and (name is None or is_worker_name(name))
        )

    def is_worker_job(self, job: NamedJob) -> bool:
        """For a job record with .user, .partition and .name (slurm.Job)."""
        return self.is_worker(job.user, job.partition, job.name)
