"""Planner: model choice by weight and demand, and GPU groups per model."""

from isense_slurm.planner import Demand, ModelSpec, Snapshot, WorkerState, make_plan
from planner_world import T0, line_for, node, nodes, policy, worker

SMALL = ModelSpec("small", 1)
BIG = ModelSpec("big", 4)


def gpus_by_model(plan):
    out = {}
    for s in plan.submits:
        out[s.model] = out.get(s.model, 0) + s.gpus
    return out


def test_weights_split_lent_gpus_when_demand_is_equal():
    models = (ModelSpec("a", 1, weight=3.0), ModelSpec("b", 1, weight=1.0))
    plan = make_plan(Snapshot(T0, nodes(2)), policy(models=models))
    assert gpus_by_model(plan) == {"a": 6, "b": 2}
    # the same split when both have the same waiting demand
    busy = (Demand("a", queued=4), Demand("b", queued=4))
    assert gpus_by_model(make_plan(Snapshot(T0, nodes(2), demand=busy), policy(models=models))) == {"a": 6, "b": 2}


def test_demand_shifts_new_workers_to_the_model_clients_wait_for():
    models = (ModelSpec("a", 1, weight=1.0), ModelSpec("b", 1, weight=1.0))
    demand = (Demand("b", queued=5, rejected=4),)
    plan = make_plan(Snapshot(T0, nodes(1), demand=demand), policy(models=models, max_lend_share=1.0))
    # scores a=1, b=10: b takes the first GPUs until it holds 10x what a holds
    assert gpus_by_model(plan) == {"b": 3, "a": 1}
    line = line_for(plan, "lend n1:")
    assert "b: weight 1, 9 waiting, 3 GPUs lent" in line


def test_rejections_alone_count_as_demand():
    models = (ModelSpec("a", 4), ModelSpec("b", 4))
    plan = make_plan(Snapshot(T0, nodes(1), demand=(Demand("b", rejected=2),)), policy(models=models))
    assert [s.model for s in plan.submits] == ["b"]


def test_existing_workers_count_toward_their_model():
    models = (ModelSpec("a", 4), ModelSpec("b", 4))
    running = (worker("1", "n1", model="a"),)
    snap = Snapshot(T0, (node("n1", workers=4), node("n2")), workers=running)
    assert [s.model for s in make_plan(snap, policy(models=models)).submits] == ["b"]


def test_pending_worker_without_node_counts_toward_its_model():
    models = (ModelSpec("a", 4), ModelSpec("b", 4))
    waiting = (worker("1", None, model="b", state=WorkerState.PENDING, age=1),)
    plan = make_plan(Snapshot(T0, nodes(2), workers=waiting), policy(models=models))
    assert [s.model for s in plan.submits] == ["a"]  # n2 stays free for the pending b


def test_big_model_takes_a_whole_free_node_first_and_small_fill_the_rest():
    plan = make_plan(Snapshot(T0, nodes(2)), policy(models=(SMALL, BIG)))
    assert [(s.node, s.model) for s in plan.submits] == [
        ("n1", "big"),
        ("n2", "small"),
        ("n2", "small"),
        ("n2", "small"),
        ("n2", "small"),
    ]
    assert line_for(plan, "lend n2:").startswith("lend n2: 4 x small (1 GPU) for 240 min")


def test_a_full_node_is_no_reason_to_call_a_model_skipped():
    plan = make_plan(Snapshot(T0, nodes(1)), policy(models=(SMALL, BIG)))
    assert [s.model for s in plan.submits] == ["big"]
    assert [x for x in plan.explanations if x.startswith("model")] == []


def test_model_needing_more_than_any_free_group_is_skipped_with_a_line():
    snap = Snapshot(T0, (node("n1", training=2), node("n2", training=1)))
    plan = make_plan(snap, policy(models=(SMALL, BIG)))
    assert gpus_by_model(plan) == {"small": 5}
    assert line_for(plan, "model big") == (
        "model big skipped: needs 4 GPUs on one node; largest free group was 3 GPUs (n2)"
    )


def test_node_whose_free_group_fits_no_model_says_so():
    plan = make_plan(Snapshot(T0, (node("n1", training=2),)), policy(models=(BIG,)))
    assert plan.submits == ()
    assert line_for(plan, "not lending n1:") == "not lending n1: 2 GPUs free, but the smallest model needs 4"


def test_share_room_smaller_than_the_model_is_explained():
    plan = make_plan(Snapshot(T0, nodes(2)), policy(models=(BIG,), max_lend_share=0.75))
    assert [s.node for s in plan.submits] == ["n1"]
    assert line_for(plan, "not lending n2:") == (
        "not lending n2: 4 GPUs free, but 2 GPUs left under the share cap; smallest model needs 4"
    )
    assert not [x for x in plan.explanations if x.startswith("model big")]  # it was placed on n1
    never = make_plan(Snapshot(T0, nodes(2)), policy(models=(BIG,), max_lend_share=0.25))
    assert never.submits == ()
    assert line_for(never, "model big") == "model big skipped: needs 4 GPUs, more than the room left under the share"


def test_leftover_gpus_on_a_lent_node_are_explained():
    models = (ModelSpec("pair", 2), ModelSpec("trio", 3))
    plan = make_plan(Snapshot(T0, nodes(1)), policy(models=models))
    # trio is the larger model at a tie, then pair does not fit the 1 GPU left
    assert [s.model for s in plan.submits] == ["trio"]
    assert line_for(plan, "lend n1:").endswith("; 1 GPU free, but the smallest model needs 2")


def test_eight_gpu_node_packs_groups_per_model():
    models = (ModelSpec("a", 2), ModelSpec("b", 4))
    plan = make_plan(Snapshot(T0, (node("n1", gpus=8),)), policy(models=models))
    assert sorted((s.model, s.gpus) for s in plan.submits) == [("a", 2), ("a", 2), ("b", 4)]
