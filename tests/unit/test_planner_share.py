"""Planner: the lend share cap, cancels down to it, and a seeded property check."""

import random
from dataclasses import replace
from datetime import timedelta

from isense_slurm.planner import (
    Demand,
    ModelSpec,
    PendingTraining,
    ReservedWindow,
    Snapshot,
    Worker,
    WorkerState,
    make_plan,
)
from planner_world import T0, line_for, node, nodes, policy, worker

SMALL = ModelSpec("small", 1)
PAIR = ModelSpec("pair", 2)
TINY = ModelSpec("tiny-llama", 4)


def test_cap_is_a_share_of_all_pool_gpus_rounded_down():
    plan = make_plan(Snapshot(T0, nodes(4)), policy(max_lend_share=0.75))
    assert [s.node for s in plan.submits] == ["n1", "n2", "n3"]
    assert "cap 12 (max_lend_share 0.75)" in plan.explanations[0]
    assert "share cap reached (12 of 12 GPUs lent or planned" in line_for(plan, "not lending n4:")


def test_pending_workers_without_a_node_count_against_the_share():
    floating = worker("40", None, state=WorkerState.PENDING, age=1)
    plan = make_plan(Snapshot(T0, nodes(2), workers=(floating,)), policy(max_lend_share=0.5))
    assert plan.submits == ()
    assert "lent 4 (pending 4, running 0, draining 0)" in plan.explanations[0]


def test_draining_workers_still_count():
    leaving = worker("41", "n1", state=WorkerState.DRAINING)
    plan = make_plan(Snapshot(T0, (node("n1", workers=4), node("n2")), workers=(leaving,)), policy(max_lend_share=0.5))
    assert plan.submits == () and plan.cancels == ()


def test_share_lowered_cancels_youngest_pending_first_then_youngest_running():
    workers = (
        worker("10", "n1", age=3000),
        worker("11", "n2", age=100),
        worker("12", "n3", age=2000),
        worker("13", "n4", state=WorkerState.PENDING, age=5, reason="Resources"),
    )
    snap = Snapshot(T0, tuple(node(f"n{i}", workers=4 if i < 4 else 0) for i in range(1, 5)), workers=workers)
    plan = make_plan(snap, policy(max_lend_share=0.25))
    assert [c.job_id for c in plan.cancels] == ["13", "11", "12"]
    assert plan.submits == ()
    assert line_for(plan, "cancel 11").endswith("over the share: 12 GPUs lent > cap 4 (max_lend_share 0.25)")


def test_no_submits_in_the_tick_that_cancels_for_the_share():
    # Cancelling the 4-GPU worker overshoots; refilling at once would only churn.
    workers = (worker("20", "n1", age=10), worker("21", "n2", model="small", gpus=1, age=5000))
    snap = Snapshot(T0, (node("n1", workers=4), node("n2", workers=1)), workers=workers)
    plan = make_plan(snap, policy(max_lend_share=0.5, models=(TINY, SMALL)))
    assert [c.job_id for c in plan.cancels] == ["20"]
    assert plan.submits == ()
    assert "cancelling workers down to the share cap this tick" in line_for(plan, "not lending n2:")


def test_within_share_nothing_is_cancelled():
    workers = (worker("10", "n1"), worker("11", "n2"))
    snap = Snapshot(T0, (node("n1", workers=4), node("n2", workers=4), node("n3")), workers=workers)
    plan = make_plan(snap, policy(max_lend_share=0.7))
    assert plan.cancels == () and plan.submits == ()


# ---------------------------------------------------------------- property check

MODELS = (SMALL, PAIR, TINY)


def random_snapshot(rng: random.Random) -> Snapshot:
    now = T0 + timedelta(minutes=rng.randrange(0, 10_000))
    pool = []
    workers: list[Worker] = []
    for i in range(1, rng.randint(2, 8)):
        total = rng.choice([1, 2, 4, 8])
        training = rng.randint(0, total)
        name = f"n{i}"
        held = 0
        while rng.random() < 0.5:
            m = rng.choice(MODELS)
            if training + held + m.gpus > total:
                break
            state = rng.choice([WorkerState.RUNNING, WorkerState.PENDING, WorkerState.DRAINING])
            workers.append(
                Worker(
                    f"{100 + len(workers)}",
                    m.name,
                    m.gpus,
                    state,
                    node=name,
                    submit_time=now - timedelta(seconds=rng.randint(0, 900)),
                    pending_reason=rng.choice(["", "Resources", "ReqNodeNotAvail"]),
                )
            )
            held += m.gpus
        slurm_workers = sum(w.gpus for w in workers if w.node == name and w.state != WorkerState.PENDING)
        pool.append(
            node(
                name,
                gpus=total,
                training=training,
                workers=slurm_workers,
                idle=rng.choice([None, 1, 30, 90, 4000]),
                lendable=rng.random() > 0.1,
                now=now,
            )
        )
    for _ in range(rng.randint(0, 2)):
        m = rng.choice(MODELS)
        workers.append(
            Worker(
                f"{100 + len(workers)}",
                m.name,
                m.gpus,
                WorkerState.PENDING,
                node=None,
                submit_time=now - timedelta(seconds=rng.randint(0, 300)),
            )
        )
    names = [n.name for n in pool]
    training = tuple(
        PendingTraining(
            f"{500 + j}",
            "train",
            rng.choice([1, 4, 8]),
            rng.choice([None, now + timedelta(minutes=rng.randint(-5, 300))]),
            tuple(rng.sample(names, k=rng.randint(0, len(names)))),
            rng.random() > 0.2,
        )
        for j in range(rng.randint(0, 2))
    )
    reservations = tuple(
        ReservedWindow(
            f"r{j}",
            tuple(rng.sample(names, k=1)),
            now + timedelta(minutes=rng.randint(-60, 300)),
            now + timedelta(minutes=rng.randint(301, 600)),
        )
        for j in range(rng.randint(0, 1))
    )
    demand = tuple(Demand(m.name, rng.randint(0, 5), rng.randint(0, 3)) for m in MODELS if rng.random() < 0.5)
    return Snapshot(now, tuple(pool), tuple(workers), training, reservations, demand)


def lent_after(snap: Snapshot, plan) -> tuple[int, int]:
    """(GPUs lent once the plan is applied, GPUs of draining workers nobody can cancel)."""
    gone = {c.job_id for c in plan.cancels}
    kept = sum(w.gpus for w in snap.workers if w.job_id not in gone)
    draining = sum(w.gpus for w in snap.workers if w.state == WorkerState.DRAINING)
    return kept + sum(s.gpus for s in plan.submits), draining


def test_no_plan_exceeds_the_share_or_double_books_a_gpu():
    rng = random.Random(20240501)
    checked_submits = 0
    for _ in range(3000):
        snap = random_snapshot(rng)
        pol = policy(
            max_lend_share=rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]), models=MODELS, min_idle_seconds=rng.choice([0, 60])
        )
        plan = make_plan(snap, pol)
        total = sum(n.gpus_total for n in snap.nodes)
        cap = int(pol.max_lend_share * total + 1e-9)

        after, draining = lent_after(snap, plan)
        assert after <= max(cap, draining), plan.text()
        if plan.submits:
            # New workers only while everything already lent (cancelled or not) fits too.
            assert sum(w.gpus for w in snap.workers) + sum(s.gpus for s in plan.submits) <= cap, plan.text()
        for n in snap.nodes:
            held = max(
                n.gpus_used_by_workers,
                sum(w.gpus for w in snap.workers if w.node == n.name and w.state != WorkerState.PENDING),
            )
            held += sum(w.gpus for w in snap.workers if w.node == n.name and w.state == WorkerState.PENDING)
            new = [s for s in plan.submits if s.node == n.name]
            assert n.gpus_used_by_training + held + sum(s.gpus for s in new) <= n.gpus_total or not new, plan.text()
            for s in new:
                assert n.lendable and s.gpus == next(m.gpus for m in MODELS if m.name == s.model)
                assert 5 <= s.time_limit_minutes <= pol.max_job_minutes
                assert 1 <= s.time_min_minutes <= s.time_limit_minutes
        assert len({c.job_id for c in plan.cancels}) == len(plan.cancels)
        cancelled = {c.job_id for c in plan.cancels}
        assert all(w.state != WorkerState.DRAINING for w in snap.workers if w.job_id in cancelled)
        # Deterministic, whatever order the controller lists things in.
        shuffled = replace(
            snap,
            nodes=tuple(rng.sample(snap.nodes, len(snap.nodes))),
            workers=tuple(rng.sample(snap.workers, len(snap.workers))),
            pending_training=tuple(reversed(snap.pending_training)),
        )
        assert make_plan(shuffled, pol) == plan
        checked_submits += len(plan.submits)
    assert checked_submits > 500  # the generator does reach the lending paths
