"""Hook events -> ledger: workers' ends with the right reason, reclaim records with the
training job's submit time, and an early tick when GPUs come free.

on_event() is called on the event loop for each valid event (reclaim/events.py);
it only wakes the agent and queues the event. One thread handles the queue in order:
it asks Slurm about the jobs (scontrol show job) and writes the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from isense_slurm.contracts.events import EventKind
from isense_slurm.contracts.states import EndReason, WorkerStage
from isense_slurm.contracts.workers import WorkerRule, is_worker_name
from isense_slurm.errors import SlurmError
from isense_slurm.reclaim.book import ReclaimBook
from isense_slurm.slurm import Job

log = logging.getLogger("isense.controller")

# Slurm's final job state says why a worker ended better than its epilog can.
_STATE_REASONS = {
    "PREEMPTED": EndReason.PREEMPTED,
    "TIMEOUT": EndReason.TIME_LIMIT,
    "DEADLINE": EndReason.TIME_LIMIT,
    "COMPLETED": EndReason.COMPLETED,
    "CANCELLED": EndReason.COMPLETED,  # scancel (ours: share, window, stuck): stopped on request
    "FAILED": EndReason.FAILED,
    "NODE_FAIL": EndReason.FAILED,
    "BOOT_FAIL": EndReason.FAILED,
    "OUT_OF_MEMORY": EndReason.FAILED,
}
LIMIT_SLACK_SECONDS = 2.0


def worker_end_reason(
    hook_reason: str | None, job: Job | None, sigterm_time: float | None, *, made_way: bool = False
) -> str:
    """The ledger's end reason of a worker from its epilog's guess and Slurm's job record.

    The epilog reads any SIGTERM as "preempted"; a SIGTERM at the job's time limit is
    "time_limit". Slurm's final state decides when it has one, except for a worker the
    controller stopped to make way for training (`made_way`): it ends COMPLETED (it exits
    on the SIGTERM) or PREEMPTED (Slurm was first), and was preempted.
    """
    reason = EndReason(hook_reason or EndReason.FAILED)
    if job is None:
        return reason
    if made_way and job.state in ("COMPLETED", "CANCELLED", "PREEMPTED"):
        return EndReason.PREEMPTED
    if job.state in _STATE_REASONS and not (job.state == "CANCELLED" and reason == EndReason.FAILED):
        return _STATE_REASONS[job.state]
    if reason == EndReason.PREEMPTED and job.start_time and job.time_limit:
        deadline = job.start_time.timestamp() + job.time_limit * 60
        if (sigterm_time or 0) >= deadline - LIMIT_SLACK_SECONDS:
            return EndReason.TIME_LIMIT
    return reason


def end_reason_of_finished(job: Job | None) -> str:
    """Reason for a worker the ledger still holds open but Slurm has let go (restart)."""
    if job is None:
        return EndReason.LOST
    return _STATE_REASONS.get(job.state, EndReason.LOST)


class EventRecorder:
    """`book`: the reclaims in flight, shared with make way (it knows the submits it
    caught and the workers it stopped); without one, a book of its own."""

    def __init__(
        self,
        slurm,
        ledger,
        *,
        book: ReclaimBook | None = None,
        lend_partition: str | None = None,
        service_account: str | None = None,
        wake: Callable[[], None] | None = None,
    ):
        self.slurm = slurm
        self.ledger = ledger
        self.wake = wake
        self.book = book if book is not None else ReclaimBook(WorkerRule(service_account, lend_partition))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="isense-events")

    def on_event(self, event: dict) -> None:
        if event["kind"] == EventKind.GPUS_FREE and self.wake is not None:
            self.wake()
        self._executor.submit(self._safe_handle, event)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _safe_handle(self, event: dict) -> None:
        try:
            self.handle(event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the queue
            log.exception("hook event %s from %s not recorded", event.get("kind"), event.get("node"))

    def handle(self, event: dict) -> None:
        job = self._job(event["job_id"]) if event["kind"] == EventKind.WORKER_END else None
        # The hooks call every job of the service account in the lend partition a worker;
        # only isense-* jobs are the controller's (others are the admin's own tests).
        if event["kind"] == EventKind.WORKER_END and (job is None or is_worker_name(job.name)):
            reason = worker_end_reason(
                event.get("reason"), job, event.get("sigterm_time"), made_way=self.book.made_way(event["job_id"])
            )
            self.ledger.worker_event(
                event["job_id"],
                state=WorkerStage.ENDED,
                node=event["node"],
                gpus=event.get("gpus") or None,
                reason=reason,
                at=event["time"],
            )
        for reclaim in self.book.add_event(event):
            fields = reclaim.ledger_fields()
            fields["submit_time"] = self._submit_time(reclaim.training_job_id)
            self.ledger.record_reclaim(**fields)
            log.info(
                "reclaim: job %s on %s took worker %s's GPUs: %s",
                reclaim.training_job_id,
                reclaim.node,
                fields["worker_job_id"],
                _timeline(fields),
            )

    def _job(self, job_id: str) -> Job | None:
        try:
            return self.slurm.job(job_id)
        except SlurmError as err:
            log.warning("job %s not read from Slurm: %s", job_id, err)
            return None

    def _submit_time(self, job_id: str) -> float | None:
        """Slurm's submit time has whole seconds; make way's wake has the moment."""
        return self.book.submit_time(job_id, self._slurm_submit)

    def _slurm_submit(self, job_id: str) -> float | None:
        job = self._job(job_id)
        return job.submit_time.timestamp() if job and job.submit_time else None


def _timeline(f: dict) -> str:
    base = f.get("submit_time")
    if base is None:
        return "submit time unknown"
    parts = []
    for key, label in (("sigterm_time", "SIGTERM"), ("gpus_free_time", "free"), ("start_time", "start")):
        if f.get(key) is not None:
            parts.append(f"{label} +{f[key] - base:.2f} s")
    return ", ".join(parts)
