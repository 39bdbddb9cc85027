"""Planner over several ticks (no duplicates), queue hygiene cancels, config and border."""

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from isense_slurm.config import parse_config
from isense_slurm.planner import ModelSpec, PendingTraining, Policy, Snapshot, WorkerState, make_plan
from planner_world import T0, World, line_for, node, nodes, policy, worker

PLANNER_DIR = Path(__file__).resolve().parents[2] / "isense_slurm" / "planner"
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "isense.toml"


def test_consecutive_ticks_never_submit_twice_for_the_same_gpus():
    world = World(Snapshot(T0, nodes(3)))
    submitted = []
    for _ in range(6):
        plan = make_plan(world.snapshot, policy())
        submitted += [s.node for s in plan.submits]
        world.apply(plan)
    assert submitted == ["n1", "n2", "n3"]
    assert {w.state for w in world.snapshot.workers} == {WorkerState.RUNNING}


def test_ticks_with_mixed_models_fill_each_gpu_once():
    pol = policy(models=(ModelSpec("small", 1), ModelSpec("pair", 2)))
    world = World(Snapshot(T0, (node("n1"), node("n2", gpus=8, training=3))))
    for _ in range(5):
        world.apply(make_plan(world.snapshot, pol))
    held = {}
    for w in world.snapshot.workers:
        held[w.node] = held.get(w.node, 0) + w.gpus
    assert held == {"n1": 4, "n2": 5}


def test_worker_seen_pending_then_running_is_not_duplicated_when_slurm_lags():
    # Tick 1 submits; tick 2 sees the worker only in the controller's memory (pending,
    # pinned), Slurm's node view not yet updated.
    snap = Snapshot(T0, nodes(1))
    first = make_plan(snap, policy())
    assert len(first.submits) == 1
    lagging = Snapshot(
        T0 + timedelta(seconds=5), snap.nodes, workers=(worker("900", "n1", state=WorkerState.PENDING, age=5),)
    )
    assert make_plan(lagging, policy()).submits == ()


def test_share_holds_over_ticks_as_training_takes_nodes_back():
    world = World(Snapshot(T0, nodes(4)))
    pol = policy(max_lend_share=0.5)
    lent_nodes = []
    for tick in range(8):
        if tick == 3:
            world.preempt("n1", training=4)
        plan = make_plan(world.snapshot, pol)
        lent = sum(w.gpus for w in world.snapshot.workers) + sum(s.gpus for s in plan.submits)
        assert lent <= 8, plan.text()
        lent_nodes += [s.node for s in plan.submits]
        world.apply(plan)
    # n1 and n2 first; once training took n1 back, n3 was lent in its place.
    assert lent_nodes == ["n1", "n2", "n3"]
    assert sorted(w.node for w in world.snapshot.workers) == ["n2", "n3"]


def test_requeued_worker_blocked_by_training_is_cancelled():
    # PreemptMode=REQUEUE: the preempted worker is back, pending, pinned to n1 which training holds.
    requeued = worker("70", "n1", state=WorkerState.PENDING, age=20, reason="BeginTime")
    snap = Snapshot(T0, (node("n1", training=4, idle=None), node("n2")), workers=(requeued,))
    plan = make_plan(snap, policy(max_lend_share=0.5))
    assert [c.job_id for c in plan.cancels] == ["70"]
    assert line_for(plan, "cancel 70") == (
        "cancel 70 (tiny-llama on n1, pending): cannot start: n1 has 4 of 4 GPUs used by training"
        " and 0 by workers, it needs 4"
    )
    # Its share is freed only once it is gone: no churn in the same tick.
    assert plan.submits == ()


def test_pending_worker_on_a_free_node_is_left_alone():
    fresh = worker("71", "n1", state=WorkerState.PENDING, age=3, reason="None")
    plan = make_plan(Snapshot(T0, nodes(1), workers=(fresh,)), policy())
    assert plan.cancels == () and plan.submits == ()


def test_stuck_pending_worker_is_cancelled_after_the_limit():
    stuck = worker("72", "n1", state=WorkerState.PENDING, age=200, reason="ReqNodeNotAvail")
    young = worker("73", "n2", state=WorkerState.PENDING, age=30, reason="ReqNodeNotAvail")
    waiting = worker("74", "n3", state=WorkerState.PENDING, age=900, reason="Resources")
    snap = Snapshot(T0, nodes(3), workers=(stuck, young, waiting))
    plan = make_plan(snap, policy(stuck_pending_seconds=120))
    assert [(c.job_id, c.reason) for c in plan.cancels] == [
        ("72", "stuck: pending 200 s with reason ReqNodeNotAvail (limit 120 s)"),
    ]


def test_training_pending_for_a_node_that_has_a_worker_needs_no_action():
    # Slurm preempts the worker by itself; the planner neither cancels nor re-lends.
    job = PendingTraining("80", "train", 4, T0, ("n1",))
    snap = Snapshot(T0, (node("n1", workers=4),), workers=(worker("60", "n1"),), pending_training=(job,))
    plan = make_plan(snap, policy())
    assert plan.actions == ()


def test_policy_from_the_example_config():
    cfg = parse_config(EXAMPLE_CONFIG.read_text(), EXAMPLE_CONFIG)
    pol = Policy.from_config(cfg)
    assert pol.max_lend_share == cfg.slurm.max_lend_share
    assert pol.min_idle_seconds == cfg.slurm.min_idle_seconds
    assert pol.lend_partition == "inference"
    assert [(m.name, m.gpus, m.weight) for m in pol.models] == [(m.name, m.gpus, m.weight) for m in cfg.models]
    assert [w.text for w in pol.availability] == ["weekdays 20:00-08:00", "weekends 00:00-24:00"]
    assert Policy.from_config(cfg, min_window_minutes=9).min_window_minutes == 9
    # Wednesday 14:00 is outside the example's windows: nothing is lent.
    assert make_plan(Snapshot(T0, nodes(2)), pol).submits == ()


def test_planner_imports_no_io_code():
    code = (
        "import sys, isense_slurm.planner\n"
        "bad = {'subprocess', 'sqlite3', 'socket', 'aiohttp', 'http.client', 'urllib.request', 'asyncio',\n"
        "       'isense_slurm.slurm', 'isense_slurm.meter', 'isense_slurm.gateway', 'isense_slurm.config'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_planner_never_reads_the_clock_or_files():
    forbidden = re.compile(
        r"\b(datetime\.now|datetime\.today|date\.today|time\.time|time\.monotonic|utcnow|open\(|os\.)"
    )
    hits = [f"{p.name}: {m.group(0)}" for p in PLANNER_DIR.glob("*.py") for m in forbidden.finditer(p.read_text())]
    assert hits == []
