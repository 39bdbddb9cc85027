"""reclaim/make_way.py: Slurm views -> make_way inputs, and the wake-file watcher."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from isense_slurm.controller.memory import Memory
from isense_slurm.controller.observe import Scope
from isense_slurm.reclaim.make_way import preempting_partitions, stoppable_nodes, waiting_jobs
from isense_slurm.reclaim.submit_watch import SubmitWatcher
from isense_slurm.slurm import Job, Node, Partition

SCOPE = Scope(lend_partition="inference", service_account="isense", pools=("train",))
T0 = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)


def job(
    job_id,
    *,
    user="trainer",
    partition="train",
    name="train.sh",
    state="RUNNING",
    nodes=(),
    gpus=4,
    per_node=0,
    reason=None,
    required=(),
    node_count=1,
    submit=T0,
    preempt_time=None,
):
    return Job(
        job_id=job_id,
        name=name,
        user=user,
        state=state,
        reason=reason,
        partition=partition,
        gpus=gpus,
        gpus_per_node=per_node,
        nodes=tuple(nodes),
        node_count=node_count,
        required_nodes=tuple(required),
        submit_time=submit,
        preempt_time=preempt_time,
    )


def worker(job_id, node, **kw):
    return job(job_id, user="isense", partition="inference", name="isense-tiny", nodes=(node,), **kw)


def test_preempting_partitions_are_the_higher_tiers():
    parts = [
        Partition("train", priority_tier=10),
        Partition("debug", priority_tier=1),
        Partition("inference", priority_tier=1, preempt_mode="REQUEUE"),
        Partition("big", priority_tier=20),
    ]
    assert preempting_partitions(parts, "inference") == {"train", "big"}


def test_no_preemption_when_the_lend_partition_is_not_preemptable():
    parts = [Partition("train", priority_tier=10), Partition("inference", priority_tier=1, preempt_mode="OFF")]
    assert preempting_partitions(parts, "inference") == set()
    assert preempting_partitions(parts, "missing") == set()


def test_waiting_jobs_skip_workers_and_ineligible_and_keep_submit_order():
    jobs = [
        job(3, state="PENDING", reason="Resources", submit=T0 + timedelta(seconds=2), required=("n2",)),
        job(2, state="PENDING", reason=None, submit=T0 + timedelta(seconds=1), gpus=8, node_count=2),
        job(4, state="PENDING", reason="Dependency"),
        job(5, user="isense", partition="inference", name="isense-tiny", state="PENDING"),
        job(6, state="RUNNING", nodes=("n1",)),
    ]
    out = waiting_jobs(jobs, SCOPE)
    assert [(w.job_id, w.gpus_per_node, w.nodes, w.required_nodes) for w in out] == [
        ("2", 4, 2, ()),
        ("3", 4, 1, ("n2",)),
    ]


def test_stoppable_nodes_split_training_stoppable_and_leaving_workers():
    nodes = [
        Node("n1", "MIXED", gpus_total=4, gpus_alloc=4, partitions=("train", "inference")),
        Node("n2", "ALLOCATED", gpus_total=4, gpus_alloc=4, partitions=("train", "inference")),
        Node("n3", "IDLE", flags=frozenset({"DRAIN"}), gpus_total=4, partitions=("train",)),
    ]
    jobs = [
        job(1, nodes=("n1",), gpus=2),
        worker(2, "n1", gpus=2),
        worker(3, "n2", gpus=4, preempt_time=T0),
        worker(4, "n2", gpus=0, state="PENDING"),
    ]
    memory = Memory()
    uses = {u.name: u for u in stoppable_nodes(nodes, jobs, SCOPE, memory, {"2": 7})}
    assert uses["n1"].gpus_other == 2 and [(w.job_id, w.gpus, w.outstanding) for w in uses["n1"].workers] == [
        ("2", 2, 7)
    ]
    assert uses["n2"].workers == () and uses["n2"].free == 4  # preempted: already leaving
    assert not uses["n3"].usable
    memory.cancelled("2", datetime.now())
    assert stoppable_nodes(nodes, jobs, SCOPE, memory)[0].workers == ()  # cancelled by us: leaving


def test_watcher_calls_back_on_each_rewrite_and_not_before(tmp_path):
    wake = tmp_path / "submit.wake"
    wake.write_text("0\n")
    calls = []
    fired = threading.Event()
    watcher = SubmitWatcher(wake, lambda mtime: (calls.append(mtime), fired.set()), poll_seconds=0.01)
    watcher.start()
    try:
        time.sleep(0.05)
        assert calls == []  # the file as it was at start is no wake
        wake.write_text("")  # the hook's truncate, before its write: not yet a wake
        time.sleep(0.05)
        assert calls == []
        wake.write_text("1 1 uid=1001\n")
        assert fired.wait(2)
        fired.clear()
        wake.write_text("1 2 uid=1001 longer\n")
        assert fired.wait(2)
        assert watcher.wakes == 2
        assert abs(calls[-1] - wake.stat().st_mtime) < 0.001  # the wake's moment, for submit times
    finally:
        watcher.stop()


def test_watcher_survives_a_failing_pass(tmp_path):
    wake = tmp_path / "submit.wake"
    seen = threading.Event()

    def boom(mtime):
        seen.set()
        raise RuntimeError("slurm exploded")

    watcher = SubmitWatcher(wake, boom, poll_seconds=0.01)
    watcher.start()
    try:
        wake.write_text("x")
        assert seen.wait(2)
        seen.clear()
        wake.write_text("xy")
        assert seen.wait(2)  # still watching
    finally:
        watcher.stop()


def test_watcher_without_its_folder_stays_off(tmp_path):
    watcher = SubmitWatcher(tmp_path / "missing" / "submit.wake", lambda mtime: None)
    watcher.start()
    assert watcher._thread is None
    watcher.stop()


class CountingSlurm:
    """Only what WayMaker calls, counting each call (a pure-logic stand-in)."""

    def __init__(self, nodes, jobs, partitions):
        self._nodes, self._jobs, self._partitions = nodes, jobs, partitions
        self.calls: list[str] = []
        self.signalled: list[str] = []

    def config(self):
        self.calls.append("config")
        return {"PreemptType": "preempt/partition_prio"}

    def partitions(self):
        self.calls.append("partitions")
        return self._partitions

    def nodes(self):
        self.calls.append("nodes")
        return self._nodes

    def jobs(self):
        self.calls.append("jobs")
        return self._jobs

    def signal_batch(self, job_id, signal="TERM"):
        self.signalled.append((str(job_id), signal))


def test_a_pass_uses_the_ticks_nodes_and_signals_the_worker_in_the_way():
    from isense_slurm.reclaim.make_way import WayMaker

    parts = ("train", "inference")
    nodes = [Node("n1", "ALLOCATED", gpus_total=4, gpus_alloc=4, partitions=parts)]
    jobs = [worker(7, "n1", gpus=4), job(8, state="PENDING", required=("n1",))]
    slurm = CountingSlurm(
        nodes,
        jobs,
        [Partition("train", priority_tier=10), Partition("inference", priority_tier=1, preempt_mode="REQUEUE")],
    )
    clock = [100.0]
    memory = Memory()
    way = WayMaker(SCOPE, slurm, memory, clock=lambda: clock[0])
    way.note_nodes(nodes)  # as a tick does
    releases = way.run()
    assert [(r.worker_job_id, r.for_job_id) for r in releases] == [("7", "8")]
    assert slurm.signalled == [("7", "TERM")] and "7" in memory.cancels and way.book.made_way("7")
    assert "nodes" not in slurm.calls  # the tick's list was fresh
    slurm.calls.clear()
    clock[0] += 31  # no tick for a while: sinfo again
    way.run()
    assert "nodes" in slurm.calls and slurm.signalled == [("7", "TERM")]  # 7 is leaving: not signalled twice


def test_wake_time_becomes_the_submit_time_within_slurms_second():
    from isense_slurm.reclaim.make_way import WayMaker

    nodes = [Node("n1", "IDLE", gpus_total=4, partitions=("train", "inference"))]
    second = T0 + timedelta(seconds=5)
    jobs = [job(8, state="PENDING", submit=second), job(9, state="PENDING", submit=second - timedelta(seconds=3))]
    slurm = CountingSlurm(
        nodes,
        jobs,
        [Partition("train", priority_tier=10), Partition("inference", priority_tier=1, preempt_mode="REQUEUE")],
    )
    way = WayMaker(SCOPE, slurm, Memory())
    wake = second.timestamp() + 0.734
    way.run(wake)
    assert way.book.submitted_at("8") == wake  # Slurm says .000; the wake knows .734
    assert way.book.submitted_at("9") is None  # an older job: not this wake's
    way.run(wake + 0.5)
    assert way.book.submitted_at("8") == wake  # the first wake that saw it wins


class LateListingSlurm(CountingSlurm):
    """slurmctld runs job_submit.lua before it creates the job: the first listings after
    the wake may lack it. `listings` are the job lists of successive squeue calls."""

    def __init__(self, nodes, listings, partitions):
        super().__init__(nodes, listings[0], partitions)
        self.listings = list(listings)

    def jobs(self):
        self.calls.append("jobs")
        return self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]


def late_world(listings):
    parts = ("train", "inference")
    nodes = [Node("n1", "ALLOCATED", gpus_total=4, gpus_alloc=4, partitions=parts)]
    partitions = [Partition("train", priority_tier=10), Partition("inference", priority_tier=1, preempt_mode="REQUEUE")]
    return nodes, LateListingSlurm(nodes, listings, partitions)


def test_a_wake_whose_submit_is_not_listed_yet_looks_again():
    from isense_slurm.reclaim.make_way import UNSEEN_RETRY_PAUSES, WayMaker

    before = [worker(7, "n1", gpus=4), job(6, state="RUNNING", nodes=("n9",))]
    after = [*before, job(8, state="PENDING", required=("n1",))]
    nodes, slurm = late_world([before, before, before, after, after])
    pauses: list[float] = []
    way = WayMaker(SCOPE, slurm, Memory(), sleep=pauses.append)
    way.note_nodes(nodes)
    assert way.run() == []  # a tick-time pass (no wake): sets what "newer" means, no retry
    releases = way.run(wake_time=T0.timestamp())
    assert [(r.worker_job_id, r.for_job_id) for r in releases] == [("7", "8")]
    assert pauses == list(UNSEEN_RETRY_PAUSES[:2]) and way.retries == 2
    assert slurm.signalled == [("7", "TERM")]


def test_a_wake_without_a_new_job_gives_up_after_the_retries():
    from isense_slurm.reclaim.make_way import UNSEEN_RETRY_PAUSES, WayMaker

    listed = [worker(7, "n1", gpus=4)]
    nodes, slurm = late_world([listed])
    pauses: list[float] = []
    way = WayMaker(SCOPE, slurm, Memory(), sleep=pauses.append)
    way.note_nodes(nodes)
    way.run()
    assert way.run(wake_time=T0.timestamp()) == []  # an update's wake: no new job ever
    assert pauses == list(UNSEEN_RETRY_PAUSES)
    assert slurm.calls.count("jobs") == 2 + len(UNSEEN_RETRY_PAUSES)


def test_a_new_job_that_preempts_nothing_is_not_retried():
    from isense_slurm.reclaim.make_way import WayMaker

    before = [worker(7, "n1", gpus=4)]
    nodes, slurm = late_world([before, [*before, job(9, state="RUNNING", nodes=("n9",))]])
    pauses: list[float] = []
    way = WayMaker(SCOPE, slurm, Memory(), sleep=pauses.append)
    way.note_nodes(nodes)
    way.run()
    assert way.run(wake_time=T0.timestamp()) == [] and pauses == []
