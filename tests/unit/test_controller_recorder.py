"""Why a worker ended, from its epilog's guess and Slurm's record (reclaim/recorder.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from isense_slurm.reclaim.recorder import end_reason_of_finished, worker_end_reason
from isense_slurm.slurm import Job

START = datetime(2026, 5, 6, 12, 0, 0, tzinfo=UTC)


def job(state, limit=10, flags=()):
    return Job(
        job_id=5,
        name="isense-tiny",
        user="isense",
        state=state,
        flags=frozenset(flags),
        start_time=START,
        time_limit=limit,
    )


def test_slurm_state_decides():
    assert worker_end_reason("preempted", job("PREEMPTED", flags={"COMPLETING"}), None) == "preempted"
    assert worker_end_reason("preempted", job("TIMEOUT"), None) == "time_limit"
    assert worker_end_reason("failed", job("FAILED"), None) == "failed"
    assert worker_end_reason("completed", job("COMPLETED"), None) == "completed"


def test_sigterm_at_the_limit_is_a_time_limit_when_the_state_does_not_say():
    at_limit = START.timestamp() + 10 * 60 - 0.5
    early = START.timestamp() + 3 * 60
    assert worker_end_reason("preempted", job("RUNNING", flags={"COMPLETING"}), at_limit) == "time_limit"
    assert worker_end_reason("preempted", job("RUNNING", flags={"COMPLETING"}), early) == "preempted"


def test_unknown_job_keeps_the_hook_reason():
    assert worker_end_reason("preempted", None, None) == "preempted"
    assert worker_end_reason(None, None, None) == "failed"


def test_cancelled_worker_ended_on_request_unless_it_had_failed():
    assert worker_end_reason("preempted", job("CANCELLED"), None) == "completed"
    assert worker_end_reason("failed", job("CANCELLED"), None) == "failed"
    # Stopped by the controller to make way for a training job: a preemption.
    assert worker_end_reason("preempted", job("COMPLETED"), None, made_way=True) == "preempted"
    assert worker_end_reason("preempted", job("CANCELLED"), None, made_way=True) == "preempted"
    assert worker_end_reason("preempted", job("PREEMPTED"), None, made_way=True) == "preempted"
    assert worker_end_reason("preempted", job("TIMEOUT"), None, made_way=True) == "time_limit"


def test_reason_for_workers_closed_at_reconcile():
    assert end_reason_of_finished(None) == "lost"
    assert end_reason_of_finished(job("TIMEOUT")) == "time_limit"
    assert end_reason_of_finished(job("NODE_FAIL")) == "failed"


def test_reclaim_submit_time_prefers_make_ways_wake_to_slurms_whole_second():
    from isense_slurm.contracts.workers import WorkerRule
    from isense_slurm.reclaim.book import ReclaimBook
    from isense_slurm.reclaim.recorder import EventRecorder

    class OneJob:
        def job(self, job_id):
            return Job(job_id=int(job_id), name="train.sh", user="trainer", state="RUNNING", submit_time=START)

    book = ReclaimBook(WorkerRule("isense", "inference"))
    book.note_submit("8", START.timestamp() + 0.734)  # make way's wake caught job 8's submit
    recorder = EventRecorder(OneJob(), None, book=book)
    try:
        assert recorder._submit_time("8") == START.timestamp() + 0.734
        assert recorder._submit_time("9") == START.timestamp()  # no wake caught it: Slurm's second
    finally:
        recorder.close()
