"""The enumerations the processes share: worker states, end reasons, request statuses."""

from __future__ import annotations

from enum import StrEnum


class WorkerState(StrEnum):
    """A worker job as the controller sees it in Slurm (the planner's view)."""

    PENDING = "pending"  # queued in Slurm (or submitted and not yet seen there)
    RUNNING = "running"
    DRAINING = "draining"  # got SIGTERM/scancel: leaving, its GPUs not yet free


class WorkerStage(StrEnum):
    """A worker's stage in the ledger: lent (submitted) -> serving (registered with the
    gateway) -> draining -> ended."""

    LENT = "lent"
    SERVING = "serving"
    DRAINING = "draining"
    ENDED = "ended"


class EndReason(StrEnum):
    """Why a worker ended, as the ledger records it."""

    PREEMPTED = "preempted"
    TIME_LIMIT = "time_limit"
    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"  # Slurm let it go and says nothing (after a restart)


# What a node epilog may say (it cannot tell "lost").
HOOK_END_REASONS = tuple(r for r in EndReason if r is not EndReason.LOST)
# The worker was stopped by Slurm, not on its own.
STOPPED_REASONS = (EndReason.PREEMPTED, EndReason.TIME_LIMIT)


class RequestStatus(StrEnum):
    """How a request that reached a worker ended, as the ledger records it."""

    OK = "ok"
    ABORTED = "aborted"  # the client went away
    PARTIAL = "partial"  # the worker broke off mid-stream after some tokens
    ERROR = "error"
