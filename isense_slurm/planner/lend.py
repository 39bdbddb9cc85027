"""Whether a node's free GPUs may be lent now, and for how long.

The time limit is fitted to the hole Slurm forecasts on the node: it ends before the
earliest forecast start of a pending training job there, before a reservation starts
and before the availability window closes, so no training job waits for a worker's
time limit. Holes shorter than the policy's minimum are not worth a vLLM start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from isense_slurm.planner.inputs import PendingTraining, Policy, Snapshot
from isense_slurm.planner.occupancy import NodeUse
from isense_slurm.planner.text import clock, gpus, minutes_between, natural_key, seconds


@dataclass(frozen=True)
class Hole:
    """Free GPUs on one node that may be lent, and the fitted time limit."""

    node: str
    free: int
    idle_seconds: float
    limit_minutes: int
    limit_reason: str  # which bound set the limit


def node_block(use: NodeUse, snapshot: Snapshot, policy: Policy) -> str | None:
    """Why this node's GPUs cannot be lent, judged on the node alone; None if they may."""
    node, now = use.node, snapshot.now
    if not node.lendable:
        return f"node is {node.state.lower()}" if node.state else "node is not lendable"
    if policy.lend_partition and policy.lend_partition not in node.partitions:
        return f"not in lend partition {policy.lend_partition}"
    if use.free <= 0:
        pending = f", pending workers {use.pending_worker_gpus}" if use.pending_worker_gpus else ""
        return (
            f"no free GPUs (training {node.gpus_used_by_training},"
            f" workers {use.worker_gpus - use.pending_worker_gpus}{pending} of {node.gpus_total})"
        )
    if node.idle_since is None:
        return f"{gpus(use.free)} free, no idle time recorded yet"
    idle = (now - node.idle_since).total_seconds()
    if idle < policy.min_idle_seconds:
        return f"idle {seconds(idle)} s < dwell {seconds(policy.min_idle_seconds)} s"
    for r in sorted(snapshot.reservations, key=lambda r: (r.start, r.name)):
        if node.name in r.nodes and r.start <= now < r.end:
            return f"in reservation {r.name} until {clock(r.end, now)}"
    return None


def targets(job: PendingTraining, use: NodeUse) -> bool:
    """Whether a pending training job may land on this node (Slurm's forecast, else its partition)."""
    if not job.eligible:
        return False
    if job.expected_nodes:
        return use.node.name in job.expected_nodes
    return any(p in use.node.partitions for p in job.partitions)


def training_hold(use: NodeUse, snapshot: Snapshot) -> str | None:
    """A pending training job that could take these GPUs and has no forecast yet.

    It would start here at the next scheduling pass; a worker submitted now would only
    be preempted, and its vLLM start-up wasted.
    """
    for job in sorted(snapshot.pending_training, key=lambda j: natural_key(j.job_id)):
        if job.expected_start is None and targets(job, use):
            return (
                f"training job {job.job_id} is pending in {job.partition} with no start forecast;"
                " a worker would only be preempted"
            )
    return None


def fit_hole(use: NodeUse, snapshot: Snapshot, policy: Policy, window_end: datetime | None) -> Hole | str:
    """The fitted time limit for lending this node, or why the hole is too short."""
    now, name, margin = snapshot.now, use.node.name, policy.end_margin_seconds
    bounds: list[tuple[int, str]] = [(policy.max_job_minutes, "max_job_minutes")]
    for job in snapshot.pending_training:
        if job.expected_start is not None and targets(job, use):
            bounds.append(
                (
                    minutes_between(now, job.expected_start, margin),
                    f"training job {job.job_id} forecast at {clock(job.expected_start, now)}",
                )
            )
    for r in snapshot.reservations:
        if name in r.nodes and r.start > now:
            bounds.append(
                (minutes_between(now, r.start, margin), f"reservation {r.name} starts at {clock(r.start, now)}")
            )
    if window_end is not None:
        bounds.append(
            (minutes_between(now, window_end, margin), f"availability window ends at {clock(window_end, now)}")
        )
    limit, why = min(bounds)
    if limit < policy.min_window_minutes:
        return f"{why} (hole {max(limit, 0)} min < minimum {policy.min_window_minutes} min)"
    idle = (now - use.node.idle_since).total_seconds() if use.node.idle_since else 0.0
    return Hole(name, use.free, idle, limit, why)
