"""Which workers end before they serve: the controller's half of "no crash loops".

Every tick the watch follows each worker job from its submit (or first sight in squeue)
to its end, from the tick's own squeue view: it needs no node hook. A worker ended when
squeue lists it finished or no longer lists it; it served when the ledger has it
serving (the gateway records each registration, in `isense serve` or a separate
`isense gateway`); the controller stopped it when it cancelled it (policy, make way).
Each end goes to the pure planner.backoff.note_end; a worker seen serving clears its
(node, model) at once. The planner decides the holds from these counts; the agent
logs them. For a failure, the worker's last output line (<job_dir>/isense-<jobid>.out)
goes with it, so the log and the reports say why without a shell on the node.

Workers already finished when first seen (before a restart) are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from isense_slurm.contracts.workers import model_of
from isense_slurm.controller.memory import Memory
from isense_slurm.controller.observe import Observation, holds_gpus
from isense_slurm.planner import Failures, WorkerEnd, note_end, note_served
from isense_slurm.planner.backoff import is_failure

log = logging.getLogger("isense.controller")

TAIL_BYTES = 8192


def output_path(job_dir: Path, job_id: str) -> Path:
    """The worker job's output file (sbatch -o <job_dir>/isense-%j.out, controller/act.py)."""
    return Path(job_dir) / f"isense-{job_id}.out"


def last_output_line(path: Path) -> str:
    """The last non-blank line of a file, or a note saying why there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no output file {path})"
    except OSError as err:
        return f"(output file {path} not read: {err.strerror or err})"
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else "(empty output file)"


@dataclass
class Watched:
    node: str
    model: str
    served: bool = False
    stopped: bool = False


class WorkerWatch:
    """`served(job_id)`: whether the worker ever served (the ledger), None when unknown;
    without it no end counts (nothing tells a failure from a worker that served).
    `stopped(job_id)`: whether make way stopped it (it keeps its own memory)."""

    def __init__(
        self,
        job_dir: Path,
        *,
        served: Callable[[str], bool | None] | None = None,
        stopped: Callable[[str], bool] | None = None,
    ):
        self.job_dir = Path(job_dir)
        self.served = served
        self.stopped = stopped
        self.watched: dict[str, Watched] = {}
        self.failures: dict[tuple[str, str], Failures] = {}

    def follow(self, job_id: str, node: str, model: str) -> None:
        """A worker sbatch just took (call after acting: it may end before the next tick)."""
        self.watched.setdefault(job_id, Watched(node, model))

    def note_stopped(self, job_ids: Iterable[str]) -> None:
        """The controller cancelled these (call after acting: squeue may drop them before
        the next tick reads the memory)."""
        for job_id in job_ids:
            if job_id in self.watched:
                self.watched[job_id].stopped = True

    def records(self) -> tuple[Failures, ...]:
        return tuple(self.failures.values())

    def update(self, observation: Observation, memory: Memory, now: datetime) -> list[WorkerEnd]:
        """Follow this tick's workers; returns the ends seen (for logs and tests)."""
        for job_id, job in observation.workers.items():
            if job_id in self.watched or not (job.is_pending or holds_gpus(job)):
                continue
            node = (job.nodes or job.required_nodes or (None,))[0]
            if node is None and job_id in memory.submits:
                node = memory.submits[job_id].node
            if node is not None:
                self.watched[job_id] = Watched(node, model_of(job.name))
        for s in list(memory.submits.values()):
            self.follow(s.job_id, s.node, s.model)
        self.note_stopped(list(memory.cancels))

        ends = []
        for job_id, w in list(self.watched.items()):
            seen = observation.jobs.get(job_id)
            live = seen is not None and (seen.is_pending or holds_gpus(seen))
            if seen is None and job_id in memory.submits:
                live = True  # sbatch took it; squeue does not list it yet
            if not w.served and self._served(job_id):
                w.served = True
                self.failures = note_served(self.failures, w.node, w.model)
            if live:
                continue
            del self.watched[job_id]
            if self.served is None:
                continue
            end = WorkerEnd(
                job_id=job_id,
                node=w.node,
                model=w.model,
                at=now,
                served=w.served,
                state=seen.state if seen is not None else "",
                stopped=w.stopped or (self.stopped is not None and self.stopped(job_id)),
                exit_code=seen.exit_code if seen is not None else None,
            )
            if is_failure(end):
                end = replace(end, last_line=last_output_line(output_path(self.job_dir, job_id)))
                log.debug("worker %s (%s on %s) ended before serving: %s", job_id, w.model, w.node, end.last_line)
            self.failures = note_end(self.failures, end)
            ends.append(end)
        return ends

    def _served(self, job_id: str) -> bool:
        if self.served is None:
            return False
        try:
            return bool(self.served(job_id))
        except Exception as err:  # noqa: BLE001 - unknown now; asked again next tick
            log.debug("worker %s: serving state not read: %s", job_id, err)
            return False
