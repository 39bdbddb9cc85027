"""The fast half of reclaim: on a training job's submit, stop the workers it will take.

    job_submit.lua (in slurmctld) --writes--> [slurm] submit_wake file
    SubmitWatcher (reclaim/submit_watch.py, stat every 25 ms) --> WayMaker.run(): squeue (nodes from the last tick,
    partitions cached),
    planner.make_way -> SIGTERM to the batch step of each worker Slurm would preempt
    (scancel --batch --signal=TERM) -> the worker kills vLLM and exits -> the job ends
    on its own -> its epilog makes slurmctld schedule at once, instead of on its next
    once-a-second pass.

Why a signal and not scancel: a job that ends by itself is handed on at once, while a
job slurmd kills is only seen gone on slurmd's polls (20, 70, 170, 670 ms after the
kill, then once a second), and a worker with vLLM takes longer than 170 ms to go.
If the worker does not exit, Slurm's preemption still takes the job at its next pass.

Slurm's preemption stays the enforcement: with isense down, the hook only writes a
file nobody reads. Runs beside the tick (own lock): it only cancels workers, and a
worker cancelled twice is cancelled once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

# The lend loop's views and memory: make way reads Slurm the way a tick does.
from isense_slurm.controller.memory import Memory
from isense_slurm.controller.observe import Scope, gpus_on, holds_gpus
from isense_slurm.errors import SlurmError
from isense_slurm.planner.inputs import STARTABLE_REASONS
from isense_slurm.planner.make_way import Release, RunningWorker, StoppableNode, WaitingJob, make_way
from isense_slurm.reclaim.book import ReclaimBook

log = logging.getLogger("isense.controller")

# job_submit.lua runs before slurmctld creates the job, so a wake's pass may list the jobs
# before the new one exists (seen under load: the job then waited for Slurm's own pass).
# A wake whose pass lists no job newer than the previous pass did looks again after these
# pauses; an update's wake (no new job) costs those few squeue calls.
UNSEEN_RETRY_PAUSES = (0.03, 0.1, 0.25)
NODES_TTL = 30.0  # the tick's node list is used while this fresh (nodes' GPUs and partitions change rarely)
PARTITIONS_TTL = 30.0
PARTITION_PRIO = "preempt/partition_prio"
EPOCH = datetime.fromtimestamp(0, UTC)  # sorts jobs without a submit time (Slurm's are aware UTC)


def preempting_partitions(partitions, lend_partition: str | None) -> set[str]:
    """Partitions whose jobs Slurm lets preempt the lend partition's (partition_prio)."""
    lend = next((p for p in partitions if p.name == lend_partition), None)
    if lend is None or lend.preempt_mode.upper().startswith("OFF"):
        return set()
    return {p.name for p in partitions if p.priority_tier > lend.priority_tier}


def waiting_jobs(jobs, scope: Scope) -> list[WaitingJob]:
    """Pending jobs that are not workers and that Slurm may start now, oldest first."""
    out = []
    for j in sorted(
        (j for j in jobs if j.is_pending and not scope.is_worker_job(j)),
        key=lambda j: (j.submit_time is None, j.submit_time or EPOCH, j.job_id),
    ):
        if (j.reason or "") not in STARTABLE_REASONS:
            continue
        nodes = max(1, j.node_count, len(j.required_nodes))
        per_node = j.gpus_per_node or -(-j.gpus // nodes)
        out.append(
            WaitingJob(
                str(j.job_id), tuple(p for p in j.partition.split(",") if p), per_node, nodes, tuple(j.required_nodes)
            )
        )
    return out


def stoppable_nodes(
    nodes, jobs, scope: Scope, memory: Memory, outstanding: dict[str, int] | None = None
) -> list[StoppableNode]:
    """Each node's GPUs: held by others, or by running workers that may still be stopped.
    Workers already on their way out (cancelled, preempted, completing) count as free."""
    outstanding = outstanding or {}
    other: dict[str, int] = {}
    workers: dict[str, list[RunningWorker]] = {}
    for j in jobs:
        if j.is_pending or not holds_gpus(j):
            continue
        job_id = str(j.job_id)
        leaving = scope.is_worker_job(j) and (
            job_id in memory.cancels or j.state != "RUNNING" or "COMPLETING" in j.states or j.preempt_time is not None
        )
        for name in j.nodes:
            held = gpus_on(j, name)
            if leaving:
                continue
            if scope.is_worker_job(j):
                workers.setdefault(name, []).append(RunningWorker(job_id, held, outstanding.get(job_id, 0)))
            else:
                other[name] = other.get(name, 0) + held
    return [
        StoppableNode(
            n.name,
            n.partitions,
            n.gpus_total,
            min(n.gpus_total, other.get(n.name, 0)),
            tuple(workers.get(n.name, ())),
            n.usable,
        )
        for n in nodes
    ]


class WayMaker:
    """One pass: read Slurm, decide with planner.make_way, SIGTERM the workers. Thread-safe."""

    def __init__(
        self,
        scope: Scope,
        slurm,
        memory: Memory,
        *,
        dry_run: bool = False,
        outstanding: Callable[[], dict[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        book: ReclaimBook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.scope = scope
        self.slurm = slurm
        self.memory = memory
        self.dry_run = dry_run
        self.outstanding = outstanding
        self.clock = clock
        self.sleep = sleep
        self.passes = 0
        self.retries = 0  # passes run again because the woken submit was not listed yet
        self._newest_job: int | None = None  # the highest job id a pass has listed
        self.released = 0
        # Where the submits it catches and the workers it stops are kept for the recorder.
        self.book = book if book is not None else ReclaimBook(scope, clock=clock)
        self._wake_time: float | None = None
        self._partitions: set[str] | None = None
        self._partitions_at: float | None = None
        self._nodes: list | None = None
        self._nodes_at: float | None = None
        self._enabled: bool | None = None
        self._lock = threading.Lock()
        self._again = threading.Event()

    def enabled(self) -> bool:
        """Only under preempt/partition_prio, whose choice of victims this mirrors."""
        if self._enabled is None:
            try:
                preempt_type = self.slurm.config().get("PreemptType", "")
            except SlurmError as err:
                log.warning("make way: Slurm's PreemptType not read (%s); trying anyway", err)
                return True
            self._enabled = preempt_type == PARTITION_PRIO
            if not self._enabled:
                log.warning(
                    "make way off: PreemptType is %s, not %s; Slurm's own preemption reclaims alone",
                    preempt_type or "unset",
                    PARTITION_PRIO,
                )
        return self._enabled

    def note_nodes(self, nodes: list) -> None:
        """The tick's fresh node list: a pass then needs only squeue (one subprocess less
        on the hot path). Node states used from it are at most NODES_TTL old."""
        self._nodes, self._nodes_at = list(nodes), self.clock()

    def nodes(self) -> list:
        if self._nodes is None or self._nodes_at is None or self.clock() - self._nodes_at > NODES_TTL:
            self.note_nodes(self.slurm.nodes())
        assert self._nodes is not None  # note_nodes() set it
        return self._nodes

    def preempting(self) -> set[str]:
        now = self.clock()
        if self._partitions is None or self._partitions_at is None or now - self._partitions_at >= PARTITIONS_TTL:
            self._partitions = preempting_partitions(self.slurm.partitions(), self.scope.lend_partition)
            self._partitions_at = now
        return self._partitions

    def run(self, wake_time: float | None = None) -> list[Release]:
        """Stop the workers that jobs queued now would preempt; a call during a pass makes
        that pass run once more (a second submit is never missed). `wake_time`: the wake
        file's mtime (unix seconds), when a job_submit wake caused the call."""
        if wake_time is not None:
            self._wake_time = wake_time  # a rerun of a busy pass sees the latest wake
        if not self._lock.acquire(blocking=False):
            self._again.set()
            return []
        try:
            done: list[Release] = []
            pauses = iter(UNSEEN_RETRY_PAUSES if wake_time is not None else ())
            while True:
                self._again.clear()
                releases, new_job_listed = self._pass(self._wake_time)
                done += releases
                if self._again.is_set():
                    continue
                pause = None if new_job_listed else next(pauses, None)
                if pause is None:
                    return done
                self.retries += 1
                log.debug("make way: the woken submit is not listed yet; again in %.0f ms", pause * 1000)
                self.sleep(pause)
        finally:
            self._lock.release()

    def _pass(self, wake_time: float | None = None) -> tuple[list[Release], bool]:
        """The workers stopped; and whether the listing held a job newer than the last
        pass's (or there is nothing to compare: then no retry either)."""
        if not self.enabled():
            return [], True
        started = self.clock()
        self.passes += 1
        try:
            preempting = self.preempting()
            if not preempting:
                return [], True
            jobs = self.slurm.jobs()
            new_job_listed = self._note_newest(jobs)
            self.book.note_wake(jobs, wake_time)
            waiting = [w for w in waiting_jobs(jobs, self.scope) if set(w.partitions) & preempting]
            if not waiting:
                log.debug("make way: no pending job that preempts (%d jobs listed)", len(jobs))
                return [], new_job_listed
            nodes = self.nodes()
        except SlurmError as err:
            log.warning("make way skipped: %s", err)
            return [], True
        outstanding = {}
        if self.outstanding is not None:
            try:
                outstanding = self.outstanding()
            except Exception as err:  # noqa: BLE001 - only steers which worker goes first
                log.debug("outstanding requests not read: %s", err)
        uses = stoppable_nodes(nodes, jobs, self.scope, self.memory, outstanding)
        releases, lines = make_way(waiting, uses, preempting)
        for line in lines:
            (log.info if line.notable else log.debug)(
                "make way: %s (pass %.0f ms)", line.text, (self.clock() - started) * 1000
            )
        now = datetime.now()
        for r in releases:
            if self.dry_run:
                log.info("make way (dry run): would stop worker %s on %s: %s", r.worker_job_id, r.node, r.reason)
                continue
            try:
                self.slurm.signal_batch(r.worker_job_id, "TERM")
            except SlurmError as err:
                log.error("make way: SIGTERM to worker %s FAILED: %s", r.worker_job_id, err)
                continue
            self.memory.cancelled(r.worker_job_id, now)
            self.book.note_stopped(r.worker_job_id)
            self.released += 1
            after = f"{(time.time() - wake_time) * 1000:.0f} ms after the submit" if wake_time else "no wake"
            log.info(
                "make way: SIGTERM to worker %s on %s: %s (%s; pass %.0f ms)",
                r.worker_job_id,
                r.node,
                r.reason,
                after,
                (self.clock() - started) * 1000,
            )
        return releases, True

    def _note_newest(self, jobs) -> bool:
        """Remember the highest job id listed; whether it is higher than before."""
        ids = [int(j.job_id) for j in jobs if str(j.job_id).isdigit()]
        newest = max(ids, default=None)
        before = self._newest_job
        if newest is not None and (before is None or newest > before):
            self._newest_job = newest
        return before is None or (newest is not None and newest > before)
