"""A tiny pool world for planner tests: build snapshots, apply plans as Slurm would.

Plain functions (no fixtures) so each test reads top to bottom.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from isense_slurm.planner import (
    ModelSpec,
    Plan,
    Policy,
    PoolNode,
    Snapshot,
    Submit,
    Worker,
    WorkerState,
)

# A Wednesday afternoon: inside "daily"/"weekdays" day-time windows, outside night ones.
T0 = datetime(2024, 5, 1, 14, 0, 0)
TINY = ModelSpec("tiny-llama", 4)  # the dev machine's model: a whole 4-GPU node


def node(
    name: str,
    *,
    gpus: int = 4,
    training: int = 0,
    workers: int = 0,
    idle: float | None = 600.0,
    lendable: bool = True,
    state: str = "",
    partitions: tuple[str, ...] = ("train", "inference"),
    now: datetime = T0,
) -> PoolNode:
    return PoolNode(
        name=name,
        partitions=partitions,
        gpus_total=gpus,
        gpus_used_by_training=training,
        gpus_used_by_workers=workers,
        lendable=lendable,
        state=state,
        idle_since=None if idle is None else now - timedelta(seconds=idle),
    )


def nodes(count: int, **kw) -> tuple[PoolNode, ...]:
    return tuple(node(f"n{i}", **kw) for i in range(1, count + 1))


def policy(**kw) -> Policy:
    base = dict(
        max_lend_share=1.0, min_idle_seconds=60, max_job_minutes=240, models=(TINY,), lend_partition="inference"
    )
    base.update(kw)
    return Policy(**base)


def worker(
    job_id: str,
    node_name: str | None,
    *,
    model: str = "tiny-llama",
    gpus: int = 4,
    state: WorkerState = WorkerState.RUNNING,
    age: float = 300.0,
    reason: str = "",
    now: datetime = T0,
) -> Worker:
    return Worker(
        job_id=job_id,
        model=model,
        gpus=gpus,
        state=state,
        node=node_name,
        submit_time=now - timedelta(seconds=age),
        pending_reason=reason,
    )


def line_for(plan: Plan, prefix: str) -> str:
    """The one explanation line that starts with `prefix` (fails if none or several)."""
    found = [line for line in plan.explanations if line.startswith(prefix)]
    assert len(found) == 1, f"expected one line starting {prefix!r}, got {found}\n" + plan.text()
    return found[0]


class World:
    """Applies plans the way the controller and Slurm would, tick after tick.

    Submits become pending workers pinned to their node (the controller remembers
    them before squeue shows them); at the next tick Slurm starts pending workers
    that fit. Cancels make a worker draining, and it is gone one tick later.
    """

    def __init__(self, snapshot: Snapshot, tick: timedelta = timedelta(seconds=5)):
        self.snapshot = snapshot
        self.tick = tick
        self.next_id = 1000

    def apply(self, plan: Plan) -> Snapshot:
        s = self.snapshot
        now = s.now + self.tick
        cancelled = {c.job_id for c in plan.cancels}
        workers: list[Worker] = []
        for w in s.workers:
            if w.state == WorkerState.DRAINING:
                continue  # exited
            if w.job_id in cancelled:
                workers.append(replace(w, state=WorkerState.DRAINING))
            else:
                workers.append(w)
        for sub in plan.submits:
            self.next_id += 1
            workers.append(
                Worker(str(self.next_id), sub.model, sub.gpus, WorkerState.PENDING, node=sub.node, submit_time=s.now)
            )
        workers = self._start_pending(workers)
        by_node = {n.name: 0 for n in s.nodes}
        for w in workers:
            if w.state != WorkerState.PENDING and w.node in by_node:
                by_node[w.node] += w.gpus
        new_nodes = tuple(replace(n, gpus_used_by_workers=by_node[n.name]) for n in s.nodes)
        self.snapshot = replace(s, now=now, nodes=new_nodes, workers=tuple(workers))
        return self.snapshot

    def preempt(self, node_name: str, training: int) -> None:
        """A training job takes `training` GPUs on the node; Slurm preempts the workers there."""
        s = self.snapshot
        workers = tuple(w for w in s.workers if w.node != node_name)
        new_nodes = tuple(
            replace(
                n,
                gpus_used_by_training=training,
                gpus_used_by_workers=0,
                idle_since=None if training >= n.gpus_total else s.now,
            )
            if n.name == node_name
            else n
            for n in s.nodes
        )
        self.snapshot = replace(s, nodes=new_nodes, workers=workers)

    def _start_pending(self, workers: list[Worker]) -> list[Worker]:
        used = {n.name: n.gpus_used_by_training for n in self.snapshot.nodes}
        for w in workers:
            if w.state != WorkerState.PENDING and w.node in used:
                used[w.node] += w.gpus
        started = []
        totals = {n.name: n.gpus_total for n in self.snapshot.nodes}
        for w in workers:
            if w.state == WorkerState.PENDING and w.node in used and used[w.node] + w.gpus <= totals[w.node]:
                used[w.node] += w.gpus
                w = replace(w, state=WorkerState.RUNNING)
            started.append(w)
        return started


def submits_on(plan: Plan, node_name: str) -> list[Submit]:
    return [s for s in plan.submits if s.node == node_name]
