"""Reclaim records from hook events: which training job took which worker's GPUs, and
when each step happened. Pure: no clock, no I/O; times come from the events.

On one node, the GPUs a training job starts on (job_start) were last held by the
workers whose epilog (worker_end) came before it on those GPUs with no other job in
between. If at least one of those workers was stopped by Slurm (it wrote a SIGTERM
marker, or its batch shell died of SIGTERM), that is a reclaim:

    sigterm_time    the earliest SIGTERM of those workers
    gpus_free_time  the last of their epilogs; if the prolog still had to kill
                    stragglers, the end of that cleaning (the job's start time)
    start_time      the job_start event's time (after the prolog's cleaning)
    submit_time     not known to the hooks: the controller adds it from squeue

Events may arrive late (spooled) and in any order: each event re-pairs what it can
touch, and add() returns the records that are new or changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from isense_slurm.contracts.events import EventKind
from isense_slurm.contracts.states import STOPPED_REASONS
from isense_slurm.contracts.workers import WorkerRule

WINDOW_SECONDS = 600.0  # a start this long after a worker's end is no longer its reclaim
SKEW_SECONDS = 1.0  # epilog/prolog times on one node; allow a little disorder


@dataclass(frozen=True)
class Reclaim:
    training_job_id: str
    node: str
    worker_job_ids: tuple[str, ...]
    sigterm_time: float | None
    gpus_free_time: float | None
    start_time: float
    submit_time: float | None = None

    def ledger_fields(self) -> dict:
        """Keyword arguments for Ledger.record_reclaim."""
        return {
            "training_job_id": self.training_job_id,
            "node": self.node,
            "worker_job_id": ",".join(self.worker_job_ids),
            "sigterm_time": self.sigterm_time,
            "gpus_free_time": self.gpus_free_time,
            "start_time": self.start_time,
            "submit_time": self.submit_time,
        }


@dataclass(frozen=True)
class _End:
    job_id: str
    gpus: frozenset
    time: float
    sigterm_time: float | None
    stopped: bool  # by Slurm (preemption or time limit), not on its own


@dataclass(frozen=True)
class _Start:
    job_id: str
    gpus: frozenset
    time: float
    cleaned: bool


@dataclass
class _Node:
    ends: list[_End] = field(default_factory=list)
    starts: list[_Start] = field(default_factory=list)


class ReclaimAssembler:
    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        *,
        lend_partition: str | None = None,
        service_account: str | None = None,
    ):
        self.window = window_seconds
        self.rule = WorkerRule(service_account, lend_partition)
        self._nodes: dict[str, _Node] = {}
        self._emitted: dict[tuple[str, str], Reclaim] = {}
        self._latest = 0.0

    def add(self, event: dict) -> list[Reclaim]:
        """Take one validated hook event; returns reclaim records new or changed by it."""
        kind = event.get("kind")
        node = self._nodes.setdefault(event["node"], _Node())
        self._latest = max(self._latest, event["time"])
        if kind == EventKind.WORKER_END:
            end = _End(
                event["job_id"],
                frozenset(event["gpus"]),
                event["time"],
                event.get("sigterm_time"),
                event.get("sigterm_time") is not None or event.get("reason") in STOPPED_REASONS,
            )
            if end not in node.ends:
                node.ends.append(end)
            touched = [s for s in node.starts if s.time >= end.time - SKEW_SECONDS]
        elif kind == EventKind.JOB_START:
            if self.rule.is_worker(event.get("user"), event.get("partition")):
                return []
            start = _Start(event["job_id"], frozenset(event["gpus"]), event["time"], bool(event.get("cleaned")))
            node.starts = [s for s in node.starts if s.job_id != start.job_id] + [start]
            # A later start on these GPUs may now have this one between it and a worker.
            touched = [s for s in node.starts if s.time >= start.time]
        else:
            return []
        changed = []
        for start in sorted(touched, key=lambda s: s.time):
            reclaim = self._pair(event["node"], node, start)
            key = (start.job_id, event["node"])
            if reclaim is not None and self._emitted.get(key) != reclaim:
                self._emitted[key] = reclaim
                changed.append(reclaim)
        self._prune()
        return changed

    def _pair(self, name: str, node: _Node, start: _Start) -> Reclaim | None:
        holders: list[_End] = []
        for gpu in start.gpus:
            before = [
                e
                for e in node.ends
                if gpu in e.gpus and e.time <= start.time + SKEW_SECONDS and start.time - e.time <= self.window
            ]
            if not before:
                continue
            last = max(before, key=lambda e: e.time)
            # Another job started on this GPU after that worker ended: not our reclaim.
            between = any(
                gpu in s.gpus and s.job_id != start.job_id and last.time - SKEW_SECONDS < s.time < start.time
                for s in node.starts
            )
            if not between and last not in holders:
                holders.append(last)
        stopped = [e for e in holders if e.stopped]
        if not stopped:
            return None
        sigterms = [e.sigterm_time for e in stopped if e.sigterm_time is not None]
        gpus_free = max(e.time for e in holders)
        if start.cleaned:  # stragglers were killed by the prolog: free only at its end
            gpus_free = max(gpus_free, start.time)
        return Reclaim(
            training_job_id=start.job_id,
            node=name,
            worker_job_ids=tuple(sorted({e.job_id for e in stopped}, key=_job_order)),
            sigterm_time=min(sigterms) if sigterms else None,
            gpus_free_time=gpus_free,
            start_time=start.time,
        )

    def _prune(self) -> None:
        horizon = self._latest - 2 * self.window
        for node in self._nodes.values():
            node.ends = [e for e in node.ends if e.time >= horizon]
            node.starts = [s for s in node.starts if s.time >= horizon]
        self._emitted = {k: r for k, r in self._emitted.items() if r.start_time >= horizon}


def _job_order(job_id: str):
    head = job_id.split("_", 1)[0]
    return (int(head) if head.isdigit() else 0, job_id)
