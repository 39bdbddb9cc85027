"""Who holds which GPUs: per node and across the pool, counted on the safe side.

Slurm's node view and the worker list can disagree for a moment (a worker just
started, or one the controller submitted that squeue does not show yet). For free
GPUs we take the larger of the two counts, and pending workers pinned to a node hold
their GPUs there, so the planner never lends a GPU twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from isense_slurm.contracts.states import WorkerState
from isense_slurm.planner.inputs import PoolNode, Snapshot, Worker


@dataclass(frozen=True)
class NodeUse:
    node: PoolNode
    running_worker_gpus: int  # running + draining workers on this node, from the worker list
    pending_worker_gpus: int  # pending workers pinned to this node

    @property
    def worker_gpus(self) -> int:
        """GPUs workers hold or will take here."""
        return max(self.node.gpus_used_by_workers, self.running_worker_gpus) + self.pending_worker_gpus

    @property
    def free(self) -> int:
        return max(0, self.node.gpus_total - self.node.gpus_used_by_training - self.worker_gpus)

    @property
    def unlisted_worker_gpus(self) -> int:
        """Worker GPUs Slurm reports here that the worker list does not explain."""
        return max(0, self.node.gpus_used_by_workers - self.running_worker_gpus)


def node_uses(snapshot: Snapshot) -> dict[str, NodeUse]:
    running: dict[str, int] = {}
    pending: dict[str, int] = {}
    for w in snapshot.workers:
        if w.node is None:
            continue
        bucket = pending if w.state == WorkerState.PENDING else running
        bucket[w.node] = bucket.get(w.node, 0) + w.gpus
    return {n.name: NodeUse(n, running.get(n.name, 0), pending.get(n.name, 0)) for n in snapshot.nodes}


def lent_gpus(workers: tuple[Worker, ...] | list[Worker], uses: dict[str, NodeUse]) -> int:
    """GPUs lent now: every live worker (pending ones too) plus unexplained worker GPUs."""
    return sum(w.gpus for w in workers) + sum(u.unlisted_worker_gpus for u in uses.values())


def share_cap(snapshot: Snapshot, max_lend_share: float) -> tuple[int, int]:
    """(cap, pool GPUs): the most GPUs that may be lent at once."""
    total = sum(n.gpus_total for n in snapshot.nodes)
    return int(max_lend_share * total + 1e-9), total
