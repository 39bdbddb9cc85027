"""Slurm views -> the planner's Snapshot (controller/observe.py), and planning on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from isense_slurm.controller.memory import Memory, Submitted
from isense_slurm.controller.observe import Scope, build_snapshot, pool_nodes, to_local
from isense_slurm.planner import ModelSpec, Policy, WorkerState, make_plan
from isense_slurm.slurm import Job, Node, Reservation

NOW = datetime(2026, 5, 6, 14, 0, 0)  # naive local, as the planner wants
SCOPE = Scope(lend_partition="inference", service_account="isense", pools=("train",))
PARTS = ("train", "inference")


def utc(local: datetime) -> datetime:
    """The aware UTC time Slurm views carry for a naive local time."""
    return local.astimezone(UTC)


def node(name, *, alloc=0, total=4, state="IDLE", flags=frozenset(), partitions=PARTS, last_busy=None, cpus=0):
    return Node(
        name=name,
        state=state,
        flags=frozenset(flags),
        gpus_total=total,
        gpus_alloc=alloc,
        partitions=partitions,
        cpus_alloc=cpus,
        last_busy=utc(last_busy) if last_busy else None,
    )


def job(
    job_id,
    *,
    user="trainer",
    partition="train",
    name="train.sh",
    state="RUNNING",
    nodes=(),
    gpus=4,
    reason=None,
    required=(),
    submit=NOW - timedelta(minutes=5),
    expected=None,
    flags=frozenset(),
):
    return Job(
        job_id=job_id,
        name=name,
        user=user,
        state=state,
        flags=frozenset(flags),
        reason=reason,
        partition=partition,
        gpus=gpus,
        nodes=tuple(nodes),
        node_count=max(1, len(nodes)),
        required_nodes=tuple(required),
        submit_time=utc(submit),
        expected_start=utc(expected) if expected else None,
    )


def worker_job(job_id, node_name, *, state="RUNNING", **kw):
    nodes = () if state == "PENDING" else (node_name,)
    return job(
        job_id,
        user="isense",
        partition="inference",
        name="isense-tiny",
        state=state,
        nodes=nodes,
        required=(node_name,),
        **kw,
    )


def snap(nodes, jobs=(), memory=None, now=NOW, **kw):
    return build_snapshot(now, list(nodes), list(jobs), SCOPE, memory if memory is not None else Memory(), **kw)


def test_pools_are_partitions_or_node_lists():
    nodes = [node("n1"), node("n2"), node("gpu1", partitions=("big",)), node("gpu2", partitions=("big",))]
    assert [n.name for n in pool_nodes(["train"], nodes)] == ["n1", "n2"]
    assert [n.name for n in pool_nodes(["gpu[1-2]", "n2"], nodes)] == ["n2", "gpu1", "gpu2"]
    assert pool_nodes(["nothing-here"], nodes) == []


def test_node_gpus_split_between_training_and_workers():
    obs = snap([node("n1", alloc=4, state="ALLOCATED")], [job(1, nodes=("n1",), gpus=2), worker_job(2, "n1", gpus=2)])
    (n1,) = obs.snapshot.nodes
    assert (n1.gpus_used_by_training, n1.gpus_used_by_workers) == (2, 2)
    (w,) = obs.snapshot.workers
    assert (w.job_id, w.model, w.state, w.node, w.gpus) == ("2", "tiny", WorkerState.RUNNING, "n1", 2)


def test_a_job_squeue_shows_but_sinfo_not_yet_counts_as_training():
    # sinfo is read before squeue: a training job that started in between holds the node.
    obs = snap([node("n1", alloc=0)], [job(7, nodes=("n1",), gpus=4)])
    assert obs.snapshot.nodes[0].gpus_used_by_training == 4
    plan = make_plan(obs.snapshot, Policy(1.0, 0, 60, (ModelSpec("tiny", 4),), lend_partition="inference"))
    assert plan.submits == ()


def test_service_account_job_not_named_isense_counts_as_training():
    obs = snap([node("n1", alloc=4)], [job(3, user="isense", partition="inference", name="probe", nodes=("n1",))])
    assert obs.snapshot.workers == ()
    assert obs.snapshot.nodes[0].gpus_used_by_training == 4


def test_idle_since_from_last_busy_then_reset_by_training():
    memory = Memory()
    quiet = NOW - timedelta(minutes=10)
    first = snap([node("n1", last_busy=quiet)], memory=memory)
    assert first.snapshot.nodes[0].idle_since == quiet.replace(microsecond=0)
    busy = snap([node("n1", alloc=4)], [job(1, nodes=("n1",))], memory=memory, now=NOW + timedelta(seconds=5))
    assert busy.snapshot.nodes[0].idle_since is None
    later = NOW + timedelta(seconds=9)
    again = snap([node("n1", last_busy=later)], memory=memory, now=later)
    assert again.snapshot.nodes[0].idle_since == later
    # A worker on the node does not break the stretch: its GPUs are idle for training.
    kept = snap([node("n1", alloc=4)], [worker_job(5, "n1")], memory=memory, now=later + timedelta(seconds=30))
    assert kept.snapshot.nodes[0].idle_since == later


def test_node_with_a_job_starts_its_dwell_now():
    obs = snap([node("n1", alloc=2, last_busy=NOW - timedelta(hours=1))], [job(1, nodes=("n1",), gpus=2)])
    assert obs.snapshot.nodes[0].idle_since == NOW


def test_own_submit_counts_until_squeue_lists_it_no_duplicate():
    memory = Memory()
    policy = Policy(1.0, 0, 60, (ModelSpec("tiny", 4),), lend_partition="inference")
    nodes = [node("n1", last_busy=NOW - timedelta(minutes=5))]
    first = make_plan(snap(nodes, memory=memory).snapshot, policy)
    (submit,) = first.submits
    memory.submitted(Submitted("40", submit.node, submit.gpus, submit.model, NOW))
    # squeue does not list job 40 yet: it is a pending worker pinned to n1.
    second = snap(nodes, memory=memory, now=NOW + timedelta(seconds=1))
    (w,) = second.snapshot.workers
    assert (w.job_id, w.state, w.node) == ("40", WorkerState.PENDING, "n1")
    assert make_plan(second.snapshot, policy).submits == ()
    # Listed now: the memory lets go of it, squeue is the truth.
    third = snap(
        nodes,
        [worker_job(40, "n1", state="PENDING", reason="Resources")],
        memory=memory,
        now=NOW + timedelta(seconds=2),
    )
    assert memory.submits == {}
    assert [w.job_id for w in third.snapshot.workers] == ["40"]


def test_cancelled_preempted_or_completing_workers_are_draining():
    memory = Memory()
    memory.cancelled("1", NOW)
    jobs = [
        worker_job(1, "n1"),
        worker_job(2, "n2", flags={"COMPLETING"}, state="PREEMPTED"),
        worker_job(3, "n3"),
        worker_job(4, "n4", state="CONFIGURING"),
    ]
    obs = snap([node(n, alloc=4) for n in ("n1", "n2", "n3", "n4")], jobs, memory=memory)
    states = {w.job_id: w.state for w in obs.snapshot.workers}
    assert states == {
        "1": WorkerState.DRAINING,
        "2": WorkerState.DRAINING,
        "3": WorkerState.RUNNING,
        "4": WorkerState.RUNNING,
    }
    # Slurm let job 1 go: the cancel is forgotten.
    snap([node("n1")], [], memory=memory)
    assert memory.cancels == {}


def test_pending_training_with_forecast_nodes_and_eligibility():
    later = NOW + timedelta(minutes=30)
    jobs = [
        job(10, state="PENDING", reason="Resources", required=("n2",), expected=later),
        job(11, state="PENDING", reason="JobHeldUser"),
        job(12, state="PENDING", partition="other", reason="Priority"),
    ]
    obs = snap([node("n1"), node("n2")], jobs)
    by_id = {p.job_id: p for p in obs.snapshot.pending_training}
    assert set(by_id) == {"10", "11"}  # 12 is outside the pools' partitions
    assert by_id["10"].expected_start == later and by_id["10"].expected_nodes == ("n2",)
    assert by_id["10"].eligible and not by_id["11"].eligible


def test_reservations_on_pool_nodes_in_local_time():
    start, end = NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    resv = [
        Reservation("maint", ("n1",), utc(start), utc(end)),
        Reservation("elsewhere", ("x9",), utc(start), utc(end)),
        Reservation("over", ("n1",), utc(NOW - timedelta(hours=2)), utc(NOW - timedelta(hours=1))),
    ]
    obs = snap([node("n1")], reservations=resv)
    (r,) = obs.snapshot.reservations
    assert (r.name, r.start, r.end) == ("maint", start, end)


def test_submit_backoff_makes_node_unlendable_for_a_while():
    memory = Memory()
    memory.failed_submit("n1", "sbatch: invalid partition", NOW)
    (n1,) = snap([node("n1")], memory=memory).snapshot.nodes
    assert not n1.lendable and "sbatch failed" in n1.state
    (n1,) = snap([node("n1")], memory=memory, now=NOW + timedelta(minutes=1)).snapshot.nodes
    assert n1.lendable


def test_to_local_drops_the_zone_after_converting():
    assert to_local(utc(NOW)) == NOW
    assert to_local(NOW) == NOW and to_local(None) is None
