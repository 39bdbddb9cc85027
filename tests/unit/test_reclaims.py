"""Pairing a worker's SIGTERM and epilog with the training job's prolog into reclaim records."""

from isense_slurm.reclaim.assembler import Reclaim, ReclaimAssembler

T = 1_700_000_000.0


def end(job, t, gpus=(0, 1, 2, 3), node="n1", sigterm=None, reason=None):
    return {
        "kind": "worker_end",
        "job_id": job,
        "node": node,
        "gpus": list(gpus),
        "time": T + t,
        "sigterm_time": None if sigterm is None else T + sigterm,
        "reason": reason or ("preempted" if sigterm is not None else "completed"),
    }


def start(job, t, gpus=(0, 1, 2, 3), node="n1", cleaned=(), user="trainer", partition="train"):
    return {
        "kind": "job_start",
        "job_id": job,
        "node": node,
        "gpus": list(gpus),
        "time": T + t,
        "user": user,
        "partition": partition,
        "cleaned": [{"pid": p} for p in cleaned],
    }


def test_preempted_worker_then_training_start_is_one_reclaim():
    a = ReclaimAssembler()
    assert a.add(end("10", 1.2, sigterm=0.3)) == []
    (r,) = a.add(start("11", 1.5))
    assert r == Reclaim("11", "n1", ("10",), T + 0.3, T + 1.2, T + 1.5)
    assert r.ledger_fields()["worker_job_id"] == "10" and r.ledger_fields()["submit_time"] is None


def test_order_does_not_matter_late_worker_end_completes_the_record():
    a = ReclaimAssembler()
    assert a.add(start("11", 1.5)) == []
    (r,) = a.add(end("10", 1.2, sigterm=0.3))
    assert (r.training_job_id, r.worker_job_ids, r.sigterm_time) == ("11", ("10",), T + 0.3)
    assert a.add(end("10", 1.2, sigterm=0.3)) == []  # a re-sent event changes nothing


def test_worker_that_ended_on_its_own_is_no_reclaim():
    a = ReclaimAssembler()
    a.add(end("10", 1.0))  # completed, no SIGTERM
    assert a.add(start("11", 5.0)) == []


def test_sigterm_without_marker_reads_from_reason():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, reason="preempted"))
    (r,) = a.add(start("11", 1.1))
    assert r.sigterm_time is None and r.gpus_free_time == T + 1.0


def test_other_node_or_other_gpus_do_not_pair():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, gpus=(0, 1), sigterm=0.5, node="n2"))
    a.add(end("12", 1.0, gpus=(2, 3), sigterm=0.5))
    assert a.add(start("11", 1.5, gpus=(0, 1))) == []


def test_two_workers_on_the_gpus_give_earliest_sigterm_and_last_epilog():
    a = ReclaimAssembler()
    a.add(end("10", 1.4, gpus=(0, 1), sigterm=0.3))
    a.add(end("12", 0.9, gpus=(2, 3), sigterm=0.2))
    (r,) = a.add(start("11", 1.6))
    assert r.worker_job_ids == ("10", "12")
    assert (r.sigterm_time, r.gpus_free_time) == (T + 0.2, T + 1.4)


def test_one_worker_taken_by_two_training_jobs_gives_two_records():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, sigterm=0.2))
    (r1,) = a.add(start("11", 1.3, gpus=(0, 1)))
    (r2,) = a.add(start("12", 1.4, gpus=(2, 3)))
    assert {r1.training_job_id, r2.training_job_id} == {"11", "12"}
    assert r1.worker_job_ids == r2.worker_job_ids == ("10",)


def test_a_job_in_between_breaks_the_pairing():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, sigterm=0.2))
    assert len(a.add(start("11", 1.3))) == 1
    # Job 11 ran on the GPUs after the worker; job 13 later takes them from job 11, not from the worker.
    assert a.add(start("13", 50.0)) == []


def test_a_late_start_in_between_retracts_nothing_but_is_not_paired_itself():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, sigterm=0.2))
    a.add(start("13", 50.0))  # arrives first; looks like a reclaim of 10 for now
    (r,) = a.add(start("11", 1.3))  # the real one
    assert r.training_job_id == "11"


def test_straggler_cleaning_moves_gpus_free_to_the_prolog():
    a = ReclaimAssembler()
    a.add(end("10", 1.0, sigterm=0.2))
    (r,) = a.add(start("11", 2.5, cleaned=[4321]))
    assert r.gpus_free_time == T + 2.5


def test_outside_the_window_is_no_reclaim_and_worker_starts_are_ignored():
    a = ReclaimAssembler(window_seconds=60, lend_partition="inference", service_account="isense")
    a.add(end("10", 1.0, sigterm=0.2))
    assert a.add(start("11", 100.0)) == []
    a.add(end("20", 200.0, sigterm=199.0))
    assert a.add(start("21", 201.0, user="isense", partition="inference")) == []
