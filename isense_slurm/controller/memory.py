"""What the controller remembers between ticks that Slurm's views do not say.

- submits: workers sbatch accepted that squeue may not show yet (the planner must
  count them, or the next tick would lend the same GPUs twice);
- cancels: workers we scancel'd, draining until Slurm lets them go;
- idle_since: since when each pool node has had GPUs free of training (the dwell);
- backoff: nodes where sbatch failed, left alone for a while.

All times are naive local datetimes, the planner's convention. After a restart the
memory is empty: workers come back from squeue, idle times start again (a dwell late).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

UNSEEN_SUBMIT_SECONDS = 60.0  # squeue shows a job as soon as sbatch returns; this is slack
SUBMIT_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class Submitted:
    job_id: str
    node: str
    gpus: int
    model: str
    at: datetime


@dataclass
class Memory:
    submits: dict[str, Submitted] = field(default_factory=dict)
    cancels: dict[str, datetime] = field(default_factory=dict)
    idle_since: dict[str, datetime] = field(default_factory=dict)
    backoff: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # node -> (until, why)

    def submitted(self, item: Submitted) -> None:
        self.submits[item.job_id] = item

    def cancelled(self, job_id: str, now: datetime) -> None:
        self.cancels[job_id] = now

    def failed_submit(self, node: str, why: str, now: datetime) -> None:
        self.backoff[node] = (now + timedelta(seconds=SUBMIT_BACKOFF_SECONDS), why)

    def backing_off(self, node: str, now: datetime) -> str | None:
        """Why this node is left alone now, or None."""
        entry = self.backoff.get(node)
        if entry is None:
            return None
        until, why = entry
        if now >= until:
            del self.backoff[node]
            return None
        return why

    def unseen_submits(self, seen: set[str], now: datetime) -> list[Submitted]:
        """Our submits squeue does not list; forgets those it has listed or long lost."""
        limit = timedelta(seconds=UNSEEN_SUBMIT_SECONDS)
        for job_id in list(self.submits):
            if job_id in seen or now - self.submits[job_id].at > limit:
                del self.submits[job_id]
        return list(self.submits.values())

    def forget_cancels(self, live: set[str]) -> None:
        for job_id in list(self.cancels):
            if job_id not in live:
                del self.cancels[job_id]

    def note_idle(
        self, node: str, has_free_gpus: bool, now: datetime, known_since: datetime | None = None
    ) -> datetime | None:
        """Track the unbroken stretch of free GPUs on a node; returns its start.

        `known_since`: when a node first seen has been idle for sure (Slurm's last busy
        time of a node with no job), so a restart does not wait a whole dwell again.
        """
        if not has_free_gpus:
            self.idle_since.pop(node, None)
            return None
        if node not in self.idle_since:
            self.idle_since[node] = min(known_since, now) if known_since is not None else now
        return self.idle_since[node]
