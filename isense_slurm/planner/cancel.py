"""Which workers to cancel: outside the windows, stuck or blocked in the queue, over the share.

Training jobs never need the planner to get their GPUs back: Slurm preempts workers.
These cancels only keep the lent picture inside the operator's policy.
"""

from __future__ import annotations

from datetime import datetime

from isense_slurm.contracts.states import WorkerState
from isense_slurm.planner.inputs import STARTABLE_REASONS, Policy, Snapshot, Worker
from isense_slurm.planner.occupancy import NodeUse
from isense_slurm.planner.plan import Cancel
from isense_slurm.planner.text import NaturalKey, gpus, natural_key, seconds

OUTSIDE_WINDOW = "outside availability window"


def _label(w: Worker) -> str:
    where = f" on {w.node}" if w.node else ""
    return f"{w.job_id} ({w.model}{where}, {w.state})"


def _oldest_first(w: Worker) -> tuple[bool, datetime, NaturalKey]:
    # Unknown submit times sort as the youngest: the controller just submitted them.
    return (w.submit_time is None, w.submit_time or datetime.min, natural_key(w.job_id))


def cancels_outside_window(snapshot: Snapshot) -> list[Cancel]:
    return [
        Cancel(w.job_id, OUTSIDE_WINDOW)
        for w in sorted(snapshot.workers, key=lambda w: natural_key(w.job_id))
        if w.state != WorkerState.DRAINING
    ]


def cancels_blocked(snapshot: Snapshot, uses: dict[str, NodeUse]) -> list[Cancel]:
    """Pending workers pinned to a node that training (or older workers) has filled.

    With PreemptMode=REQUEUE a preempted worker comes back pending on its node; it would
    hold share and model slots while it waits, so let it go and re-lend by the rules.
    """
    held = {name: u.node.gpus_used_by_training + u.running_worker_gpus for name, u in uses.items()}
    cancels = []
    for w in sorted(snapshot.workers, key=_oldest_first):
        if w.state != WorkerState.PENDING or w.node not in uses:
            continue
        node = uses[w.node].node
        if held[w.node] + w.gpus <= node.gpus_total:
            held[w.node] += w.gpus
            continue
        cancels.append(
            Cancel(
                w.job_id,
                f"cannot start: {w.node} has {node.gpus_used_by_training} of {gpus(node.gpus_total)} used by training"
                f" and {held[w.node] - node.gpus_used_by_training} by workers, it needs {w.gpus}",
            )
        )
    return sorted(cancels, key=lambda c: natural_key(c.job_id))


def cancels_stuck(snapshot: Snapshot, policy: Policy) -> list[Cancel]:
    """Pending workers Slurm will not start (node down, partition down, held...)."""
    cancels = []
    for w in sorted(snapshot.workers, key=lambda w: natural_key(w.job_id)):
        if w.state != WorkerState.PENDING or w.pending_reason in STARTABLE_REASONS or w.submit_time is None:
            continue
        waited = (snapshot.now - w.submit_time).total_seconds()
        if waited >= policy.stuck_pending_seconds:
            cancels.append(
                Cancel(
                    w.job_id,
                    f"stuck: pending {seconds(waited)} s with reason {w.pending_reason}"
                    f" (limit {seconds(policy.stuck_pending_seconds)} s)",
                )
            )
    return cancels


def cancels_over_share(workers: list[Worker], lent: int, cap: int, max_lend_share: float) -> list[Cancel]:
    """Youngest first, pending before running (no vLLM start-up wasted), down to the cap."""

    def youngest_first(state: WorkerState) -> list[Worker]:
        return sorted((w for w in workers if w.state == state), key=_oldest_first, reverse=True)

    cancels = []
    for w in youngest_first(WorkerState.PENDING) + youngest_first(WorkerState.RUNNING):
        if lent <= cap:
            break
        reason = f"over the share: {lent} GPUs lent > cap {cap} (max_lend_share {max_lend_share:g})"
        cancels.append(Cancel(w.job_id, reason))
        lent -= w.gpus
    return cancels


def describe(worker: Worker, cancel: Cancel) -> str:
    return f"cancel {_label(worker)}: {cancel.reason}"
