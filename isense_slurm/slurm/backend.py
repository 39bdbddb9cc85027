"""The interface the rest of isense uses to observe and act on Slurm.

`CliBackend` (cli_backend.py) implements it with Slurm's commands; a pyslurm backend can
implement the same methods later. Every failure raises SlurmError with one clear line.
Reads filter in Python, because Slurm 22.05's --json output ignores filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.submit import Options

JobId = int | str  # "123" or "123_4" for array tasks


@runtime_checkable
class SlurmBackend(Protocol):
    def version(self) -> str:
        """Slurm release, e.g. "22.05.8"."""

    def nodes(self, *, partition: str | None = None, names: Iterable[str] | None = None) -> list[Node]:
        """Nodes, optionally only those in a partition or with the given names."""

    def partitions(self) -> list[Partition]: ...

    def jobs(
        self,
        *,
        user: str | None = None,
        partition: str | None = None,
        states: Iterable[str] | None = None,
        job_ids: Iterable[int] | None = None,
        name: str | None = None,
    ) -> list[Job]:
        """Jobs Slurm still knows (finished ones for MinJobAge), filtered."""

    def job(self, job_id: JobId) -> Job | None:
        """One job, or None when Slurm does not know it (any more)."""

    def submit(self, script: str, options: Options = None, *, as_user: str | None = None) -> int:
        """Submit a batch script (it must start with #!); return the job id."""

    def cancel(self, job_id: JobId, *, signal: str | None = None) -> None:
        """Cancel a job, or with `signal` send it to all of the job's steps."""

    def signal_batch(self, job_id: JobId, signal: str = "TERM") -> None:
        """Send a signal to the batch shell only."""

    def requeue(self, job_id: JobId, *, hold: bool = False) -> None: ...

    def hold(self, job_id: JobId) -> None: ...

    def release(self, job_id: JobId) -> None: ...

    def update_job(self, job_id: JobId, fields: Mapping[str, str]) -> None:
        """Change job fields, e.g. {"StartTime": "now"} to start a requeued job at once."""

    def reservations(self) -> list[Reservation]:
        """Reservations Slurm holds (active or future)."""

    def config(self) -> dict[str, str]:
        """slurmctld's running configuration (`scontrol show config`), key -> value as printed."""

    def sbatch_supports(self, option: str) -> bool:
        """Whether `sbatch --help` lists the long option (e.g. a SPANK plugin's "isense-worker")."""


def filter_jobs(
    jobs: Iterable[Job],
    *,
    user: str | None = None,
    partition: str | None = None,
    states: Iterable[str] | None = None,
    job_ids: Iterable[int] | None = None,
    name: str | None = None,
) -> list[Job]:
    """The filters squeue would apply; 22.05 ignores them with --json, so apply them here."""
    want_states = {s.upper() for s in states} if states is not None else None
    want_ids = {int(i) for i in job_ids} if job_ids is not None else None
    return [
        j
        for j in jobs
        if (user is None or j.user == user)
        and (partition is None or j.partition == partition)
        and (want_states is None or j.states & want_states)
        and (want_ids is None or j.job_id in want_ids)
        and (name is None or j.name == name)
    ]
