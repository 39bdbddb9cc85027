"""Slurm's views + gateway demand + the controller's memory -> the planner's Snapshot.

One tick reads `sinfo --json` (nodes) and `squeue --json` (all jobs), and every
RESERVATION_TTL seconds `scontrol show reservation`. build_snapshot() is the pure part:
it resolves the pools to nodes, splits each node's GPUs between training and workers,
keeps the dwell clock (idle_since) and adds the workers we submitted that squeue does
not list yet.

Workers are the service account's jobs in the lend partition named isense-<model>
(contracts/workers.py); any other job (the service account's too) counts as training:
its GPUs are not ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from isense_slurm.contracts.states import WorkerState
from isense_slurm.contracts.workers import WorkerRule, model_of
from isense_slurm.controller.memory import Memory
from isense_slurm.errors import SlurmError
from isense_slurm.planner import Demand, PendingTraining, PoolNode, ReservedWindow, Snapshot, Worker
from isense_slurm.planner.inputs import STARTABLE_REASONS
from isense_slurm.slurm import Job, Node, expand

log = logging.getLogger("isense.controller")

RESERVATION_TTL = 30.0


def to_local(when: datetime | None) -> datetime | None:
    """Slurm views give aware UTC times; the planner wants naive local wall time."""
    if when is None:
        return None
    if when.tzinfo is None:
        return when
    return when.astimezone().replace(tzinfo=None)


@dataclass(frozen=True, kw_only=True)
class Scope(WorkerRule):
    """The config's say on what is ours: which jobs are workers ([slurm] service_account,
    lend_partition) and which nodes may be lent ([slurm] pools)."""

    pools: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg) -> Scope:
        s = cfg.slurm
        return cls(lend_partition=s.lend_partition, service_account=s.service_account, pools=tuple(s.pools))


def pool_nodes(pools: Iterable[str], nodes: Iterable[Node]) -> list[Node]:
    """Nodes named by the pools: a pool is a partition name, else a node name or list."""
    nodes = list(nodes)
    partitions = {p for n in nodes for p in n.partitions}
    wanted: set[str] = set()
    for pool in pools:
        if pool in partitions:
            wanted.update(n.name for n in nodes if pool in n.partitions)
        else:
            try:
                wanted.update(expand(pool))
            except ValueError:
                log.warning("pool %r is neither a partition nor a node list", pool)
    return [n for n in nodes if n.name in wanted]


def gpus_on(job: Job, node: str) -> int:
    """GPUs a running job holds on one node."""
    if job.gpu_indices:
        return sum(len(idx) for name, idx in job.gpu_indices if name == node)
    if node not in job.nodes:
        return 0
    if len(job.nodes) == 1:
        return job.gpus
    return job.gpus_per_node or job.gpus // len(job.nodes)


def holds_gpus(job: Job) -> bool:
    """Running, or ending but not yet out of the node (COMPLETING)."""
    return job.is_active or "COMPLETING" in job.states


@dataclass
class Observation:
    snapshot: Snapshot
    jobs: dict[str, Job] = field(default_factory=dict)  # every job squeue lists, by id
    workers: dict[str, Job] = field(default_factory=dict)  # worker jobs among them


def _worker(job: Job, scope: Scope, memory: Memory) -> Worker | None:
    job_id = str(job.job_id)
    model = model_of(job.name)
    if job.is_pending:
        node = job.required_nodes[0] if len(job.required_nodes) == 1 else None
        if node is None and job_id in memory.submits:
            node = memory.submits[job_id].node
        return Worker(
            job_id,
            model,
            job.gpus,
            WorkerState.PENDING,
            node,
            to_local(job.submit_time),
            pending_reason=job.reason or "",
        )
    if not holds_gpus(job):
        return None
    node = job.nodes[0] if job.nodes else None
    # CONFIGURING: the node prolog runs (PrologFlags=Alloc); the worker is starting.
    draining = (
        job_id in memory.cancels
        or job.state not in ("RUNNING", "CONFIGURING")
        or "COMPLETING" in job.states
        or job.preempt_time is not None
    )
    return Worker(
        job_id,
        model,
        gpus_on(job, node) if node else job.gpus,
        WorkerState.DRAINING if draining else WorkerState.RUNNING,
        node,
        to_local(job.submit_time),
        to_local(job.end_time),
    )


def build_snapshot(
    now: datetime,
    nodes: list[Node],
    jobs: list[Job],
    scope: Scope,
    memory: Memory,
    *,
    reservations: Iterable = (),
    demand: Iterable[Demand] = (),
) -> Observation:
    """The planner's view of this moment. Updates `memory` (dwell clocks, seen submits)."""
    pool = pool_nodes(scope.pools, nodes)
    pool_names = {n.name for n in pool}
    by_id = {str(j.job_id): j for j in jobs}
    worker_jobs = {job_id: j for job_id, j in by_id.items() if scope.is_worker_job(j)}

    workers = [w for j in worker_jobs.values() if (w := _worker(j, scope, memory)) is not None]
    listed = {w.job_id for w in workers}
    memory.forget_cancels(listed)
    for s in memory.unseen_submits(set(worker_jobs), now):
        workers.append(Worker(s.job_id, s.model, s.gpus, WorkerState.PENDING, s.node, s.at))

    pool_view = _pool_view(pool, by_id, set(worker_jobs), memory, now)
    for name in list(memory.idle_since):
        if name not in pool_names:
            del memory.idle_since[name]

    snapshot = Snapshot(
        now=now,
        nodes=tuple(pool_view),
        workers=tuple(sorted(workers, key=lambda w: w.job_id)),
        pending_training=tuple(_pending_training(jobs, scope, {p for n in pool for p in n.partitions})),
        reservations=tuple(_reservations(reservations, pool_names, now)),
        demand=tuple(demand),
    )
    return Observation(snapshot, by_id, worker_jobs)


def _pool_view(
    pool: list[Node], by_id: dict[str, Job], worker_ids: set[str], memory: Memory, now: datetime
) -> list[PoolNode]:
    """Each pool node's GPUs split between training and workers; keeps the dwell clocks."""
    # GPUs per node from the job list too: squeue is read after sinfo, so a job Slurm
    # has just started may hold GPUs that the node view does not show yet.
    worker_held: dict[str, int] = {}
    training_held: dict[str, int] = {}
    for job_id, j in by_id.items():
        if j.is_pending or not holds_gpus(j):
            continue
        held = worker_held if job_id in worker_ids else training_held
        for name in j.nodes:
            held[name] = held.get(name, 0) + gpus_on(j, name)

    pool_view = []
    for n in sorted(pool, key=lambda n: n.name):
        workers_here = worker_held.get(n.name, 0)
        training = min(n.gpus_total, max(n.gpus_alloc - workers_here, training_held.get(n.name, 0)))
        backoff = memory.backing_off(n.name, now)
        lendable = n.usable and backoff is None
        state = n.state_text if not n.usable else (f"skipped after sbatch failed: {backoff}" if backoff else "")
        # A node with no job at all has been idle since Slurm last saw it busy.
        known = to_local(n.last_busy) if n.gpus_alloc == 0 and n.cpus_alloc == 0 else None
        idle = memory.note_idle(n.name, n.usable and n.gpus_total - training > 0, now, known)
        pool_view.append(
            PoolNode(
                name=n.name,
                partitions=n.partitions,
                gpus_total=n.gpus_total,
                gpus_used_by_training=training,
                gpus_used_by_workers=workers_here,
                lendable=lendable,
                state=state,
                idle_since=idle,
            )
        )
    return pool_view


def _pending_training(jobs: list[Job], scope: Scope, pool_partitions: set[str]) -> list[PendingTraining]:
    pending = []
    for j in jobs:
        if not j.is_pending or scope.is_worker_job(j):
            continue
        partitions = [p for p in j.partition.split(",") if p]
        if not set(partitions) & pool_partitions:
            continue
        pending.append(
            PendingTraining(
                job_id=str(j.job_id),
                partition=j.partition,
                gpus=j.gpus,
                expected_start=to_local(j.expected_start),
                expected_nodes=tuple(n for n in j.required_nodes),
                eligible=(j.reason or "") in STARTABLE_REASONS,
            )
        )
    return pending


def _reservations(reservations: Iterable, pool_names: set[str], now: datetime) -> list[ReservedWindow]:
    resv = []
    for r in reservations:
        start, end = to_local(r.start), to_local(r.end)
        if start is None or end is None or end <= now or not set(r.nodes) & pool_names:
            continue
        resv.append(ReservedWindow(r.name, tuple(r.nodes), start, end))
    return resv


class Observer:
    """Reads Slurm (through the access layer) and builds each tick's Observation."""

    def __init__(
        self,
        scope: Scope,
        slurm,
        memory: Memory,
        demand: Callable[[], Iterable[Demand]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.scope = scope
        self.slurm = slurm
        self.memory = memory
        self.demand = demand
        self.clock = clock
        self._reservations: list = []
        self._reservations_at: float | None = None
        self.last_nodes: list[Node] = []  # the latest sinfo, for make way between ticks

    def reservations(self) -> list:
        now = self.clock()
        if self._reservations_at is None or now - self._reservations_at >= RESERVATION_TTL:
            try:
                self._reservations = self.slurm.reservations()
            except SlurmError as err:  # keep the last list: reservations change rarely
                log.warning("reservations not read: %s", err)
            self._reservations_at = now
        return self._reservations

    def observe(self, now: datetime) -> Observation:
        nodes = self.slurm.nodes()
        self.last_nodes = nodes
        jobs = self.slurm.jobs()
        demand: tuple[Demand, ...] = ()
        if self.demand is not None:
            try:
                demand = tuple(self.demand())
            except Exception as err:  # noqa: BLE001 - demand only steers; lend without it
                log.warning("gateway demand not read: %s", err)
        return build_snapshot(
            now, nodes, jobs, self.scope, self.memory, reservations=self.reservations(), demand=demand
        )
