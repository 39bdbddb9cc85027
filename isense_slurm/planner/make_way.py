"""Make way: which workers to stop now so that a just-queued training job can start.

Slurm's preemption is the enforcement and needs none of this. But slurmctld only looks
at a new job on its next scheduling pass, up to a second after the submit (its
background loop ticks once a second); a job that *ends* makes it schedule at once.
So when the job_submit hook wakes the controller, it stops exactly the workers Slurm
would preempt for the new job; their epilog then starts the job within the same
second. If this guesses wrong, the cost is one worker re-lent later, never a delay:
Slurm still preempts whatever it chooses.

Pure: the controller gives the pending jobs, the nodes' GPU use and the running
workers; out come Releases, each with one line of why. Mirrors Slurm's
preempt/partition_prio: only a job in a partition of a higher PriorityTier than the
lend partition preempts workers. GPUs only: CPUs and memory are not modelled, and
Slurm alone handles jobs that need them.
"""

from __future__ import annotations

from dataclasses import dataclass

from isense_slurm.planner.text import NaturalKey, gpus, natural_key


@dataclass(frozen=True)
class WaitingJob:
    """A pending job that is not a worker, in squeue's order (oldest first)."""

    job_id: str
    partitions: tuple[str, ...]
    gpus_per_node: int  # GPUs it needs on each node
    nodes: int = 1  # how many nodes
    required_nodes: tuple[str, ...] = ()  # -w


@dataclass(frozen=True)
class RunningWorker:
    job_id: str
    gpus: int
    outstanding: int = 0  # requests in flight, if known: stop the idler worker first


@dataclass(frozen=True)
class StoppableNode:
    name: str
    partitions: tuple[str, ...]
    gpus_total: int
    gpus_other: int  # held by every job that is not a running, not-yet-stopped worker
    workers: tuple[RunningWorker, ...] = ()
    usable: bool = True  # up, not draining

    @property
    def free(self) -> int:
        return max(0, self.gpus_total - self.gpus_other - sum(w.gpus for w in self.workers))


@dataclass(frozen=True)
class Judgement:
    """One line per waiting job; `notable`: Slurm will preempt for it, yet it stops nothing
    (the controller logs these at info, the rest at debug)."""

    text: str
    notable: bool = False


@dataclass(frozen=True)
class Release:
    worker_job_id: str
    node: str
    for_job_id: str
    reason: str


def make_way(
    waiting: list[WaitingJob], nodes: list[StoppableNode], preempting_partitions: set[str]
) -> tuple[list[Release], list[Judgement]]:
    """(workers to stop, one judgement per waiting job)."""
    room = _Room({n.name: n.free for n in nodes}, {n.name: list(n.workers) for n in nodes})
    releases: list[Release] = []
    lines: list[Judgement] = []
    for job in waiting:
        parts = [p for p in job.partitions if p in preempting_partitions]
        found = _candidates(job, nodes, parts)
        if isinstance(found, Judgement):
            lines.append(found)
            continue
        chosen = room.choose(job, found)
        if chosen is None:
            lines.append(
                Judgement(
                    f"job {job.job_id}: needs {job.nodes} node(s) with {gpus(job.gpus_per_node)};"
                    " stopping workers would not free enough: it waits for training",
                    notable=True,
                )
            )
            continue
        stopped = room.stop_for(job, chosen, parts)
        releases.extend(stopped)
        lines.append(_judge(job, chosen, stopped))
    return releases, lines


def _candidates(job: WaitingJob, nodes: list[StoppableNode], parts: list[str]) -> list[StoppableNode] | Judgement:
    """The nodes `job` may take workers' GPUs on (its required ones first), or why none."""
    if not parts:
        return Judgement(f"job {job.job_id}: partition {','.join(job.partitions) or '?'} does not preempt workers")
    if job.gpus_per_node <= 0:
        return Judgement(f"job {job.job_id}: asks for no GPUs; Slurm alone decides")
    candidates = [n for n in nodes if n.usable and set(n.partitions) & set(parts)]
    if job.required_nodes:
        required = set(job.required_nodes)
        if not required <= {n.name for n in candidates}:
            return Judgement(
                f"job {job.job_id}: its nodes {','.join(job.required_nodes)} are not all usable here", notable=True
            )
        candidates = [n for n in candidates if n.name in required] + [n for n in candidates if n.name not in required]
    return candidates


def _judge(job: WaitingJob, chosen: list[StoppableNode], stopped: list[Release]) -> Judgement:
    if not stopped:
        return Judgement(f"job {job.job_id}: fits on free GPUs ({', '.join(n.name for n in chosen)}); nothing to stop")
    return Judgement(
        f"job {job.job_id}: stop worker(s) {', '.join(r.worker_job_id for r in stopped)} on "
        f"{', '.join(sorted({r.node for r in stopped}, key=natural_key))}"
        " now, before Slurm's next pass"
    )


@dataclass
class _Room:
    """Free GPUs and the workers left per node, as earlier jobs of this pass took them."""

    free: dict[str, int]
    left: dict[str, list[RunningWorker]]

    def choose(self, job: WaitingJob, candidates: list[StoppableNode]) -> list[StoppableNode] | None:
        """The nodes `job` takes, or None when stopping workers would not free enough."""
        need = job.gpus_per_node
        free, left = self.free, self.left
        fits_now = [n for n in candidates if free[n.name] >= need]
        freeable = [
            n for n in candidates if free[n.name] < need and free[n.name] + sum(w.gpus for w in left[n.name]) >= need
        ]

        # Required nodes first, then nodes that fit as they are, then the ones that cost
        # the fewest stopped GPUs.
        def order(n: StoppableNode) -> tuple[bool, bool, int, int, NaturalKey]:
            return (
                n.name not in job.required_nodes,
                free[n.name] < need,
                need - free[n.name],
                sum(w.outstanding for w in left[n.name]),
                natural_key(n.name),
            )

        chosen = sorted(fits_now + freeable, key=order)[: max(job.nodes, len(job.required_nodes))]
        if len(chosen) < job.nodes or any(r not in {n.name for n in chosen} for r in job.required_nodes):
            return None
        return chosen

    def stop_for(self, job: WaitingJob, chosen: list[StoppableNode], parts: list[str]) -> list[Release]:
        """Stop the fewest workers that free `job`'s GPUs on each chosen node, and take them."""
        need = job.gpus_per_node
        releases = []
        for node in chosen:
            for worker in _fewest_to_stop(self.left[node.name], need - self.free[node.name]):
                self.left[node.name].remove(worker)
                self.free[node.name] += worker.gpus
                reason = f"job {job.job_id} ({','.join(parts)}, {gpus(need)} on {node.name}) would preempt it"
                releases.append(Release(worker.job_id, node.name, job.job_id, reason))
            self.free[node.name] -= need  # taken by this job: later jobs do not count on it
        return releases


def _fewest_to_stop(workers: list[RunningWorker], missing: int) -> list[RunningWorker]:
    """Workers whose GPUs cover `missing`: one that covers it alone (the smallest such,
    idlest first), else the biggest first."""
    if missing <= 0:
        return []
    alone = sorted(
        (w for w in workers if w.gpus >= missing), key=lambda w: (w.gpus, w.outstanding, natural_key(w.job_id))
    )
    if alone:
        return [alone[0]]
    picked, freed = [], 0
    for w in sorted(workers, key=lambda w: (-w.gpus, w.outstanding, natural_key(w.job_id))):
        if freed >= missing:
            break
        picked.append(w)
        freed += w.gpus
    return picked
