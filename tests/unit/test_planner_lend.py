"""Planner: which nodes are lent, and the time limit fitted to Slurm's forecast."""

from datetime import timedelta

from isense_slurm.planner import ModelSpec, PendingTraining, ReservedWindow, Snapshot, WorkerState, make_plan
from planner_world import T0, line_for, node, nodes, policy, submits_on, worker


def test_idle_nodes_get_one_whole_node_worker_each():
    plan = make_plan(Snapshot(T0, nodes(2)), policy())
    assert [(s.node, s.gpus, s.model) for s in plan.submits] == [("n1", 4, "tiny-llama"), ("n2", 4, "tiny-llama")]
    assert plan.cancels == ()
    assert all(s.time_limit_minutes == 240 and s.time_min_minutes == 5 for s in plan.submits)
    assert "limit by max_job_minutes" in line_for(plan, "lend n1:")


def test_dwell_not_reached_is_explained_with_both_numbers():
    snap = Snapshot(T0, (node("n3", idle=1.2),))
    plan = make_plan(snap, policy(min_idle_seconds=2))
    assert plan.submits == ()
    assert line_for(plan, "not lending n3:") == "not lending n3: idle 1.2 s < dwell 2 s"


def test_dwell_reached_exactly_lends():
    plan = make_plan(Snapshot(T0, (node("n1", idle=60),)), policy(min_idle_seconds=60))
    assert len(plan.submits) == 1
    assert "idle 60 s >= dwell 60 s" in line_for(plan, "lend n1:")


def test_unknown_idle_time_is_not_lent():
    plan = make_plan(Snapshot(T0, (node("n1", idle=None),)), policy())
    assert plan.submits == ()
    assert "no idle time recorded" in line_for(plan, "not lending n1:")


def test_unlendable_node_names_its_state():
    plan = make_plan(Snapshot(T0, (node("n1", lendable=False, state="DRAINED"), node("n2"))), policy())
    assert [s.node for s in plan.submits] == ["n2"]
    assert line_for(plan, "not lending n1:") == "not lending n1: node is drained"


def test_node_outside_the_lend_partition_is_not_lent():
    plan = make_plan(Snapshot(T0, (node("n1", partitions=("train",)),)), policy())
    assert plan.submits == ()
    assert "not in lend partition inference" in line_for(plan, "not lending n1:")


def test_busy_node_is_not_lent():
    plan = make_plan(Snapshot(T0, (node("n1", training=4),)), policy())
    assert plan.submits == ()
    assert "no free GPUs (training 4, workers 0 of 4)" in line_for(plan, "not lending n1:")


def test_partly_free_node_lends_only_its_free_gpus():
    one_gpu = policy(models=(ModelSpec("small", 1),))
    plan = make_plan(Snapshot(T0, (node("n1", training=3),)), one_gpu)
    assert [(s.node, s.gpus) for s in plan.submits] == [("n1", 1)]


def test_limit_fitted_to_forecast_start_on_that_node():
    job = PendingTraining("77", "train", 4, expected_start=T0 + timedelta(minutes=42), expected_nodes=("n1",))
    plan = make_plan(Snapshot(T0, nodes(2), pending_training=(job,)), policy())
    (n1,), (n2,) = submits_on(plan, "n1"), submits_on(plan, "n2")
    # 42 min minus the 30 s end margin, in whole minutes.
    assert n1.time_limit_minutes == 41
    assert n2.time_limit_minutes == 240
    assert "limit by training job 77 forecast at 14:42" in line_for(plan, "lend n1:")


def test_earliest_of_several_forecasts_wins():
    jobs = (
        PendingTraining("5", "train", 4, T0 + timedelta(minutes=90), ("n1",)),
        PendingTraining("6", "train", 4, T0 + timedelta(minutes=20), ("n1", "n2")),
    )
    plan = make_plan(Snapshot(T0, nodes(1), pending_training=jobs), policy())
    assert plan.submits[0].time_limit_minutes == 19


def test_forecast_without_nodes_bounds_every_node_of_its_partition():
    job = PendingTraining("9", "train", 8, T0 + timedelta(minutes=30))
    other = node("n9", partitions=("other", "inference"))
    plan = make_plan(Snapshot(T0, (node("n1"), other), pending_training=(job,)), policy())
    assert submits_on(plan, "n1")[0].time_limit_minutes == 29
    assert submits_on(plan, "n9")[0].time_limit_minutes == 240


def test_forecast_too_soon_means_no_lending_on_that_node():
    job = PendingTraining("77", "train", 4, T0 + timedelta(minutes=4), ("n1",))
    plan = make_plan(Snapshot(T0, nodes(2), pending_training=(job,)), policy())
    assert [s.node for s in plan.submits] == ["n2"]
    line = line_for(plan, "not lending n1:")
    assert "training job 77 forecast at 14:04" in line and "< minimum 5 min" in line


def test_forecast_in_the_past_blocks_the_node():
    job = PendingTraining("77", "train", 4, T0 - timedelta(seconds=10), ("n1",))
    plan = make_plan(Snapshot(T0, nodes(1), pending_training=(job,)), policy())
    assert plan.submits == ()
    assert "hole 0 min" in line_for(plan, "not lending n1:")


def test_pending_training_without_forecast_holds_lending_in_its_partition():
    job = PendingTraining("12", "train", 4)
    elsewhere = node("n5", partitions=("debug", "inference"))
    plan = make_plan(Snapshot(T0, (node("n1"), elsewhere), pending_training=(job,)), policy())
    assert [s.node for s in plan.submits] == ["n5"]
    assert line_for(plan, "not lending n1:") == (
        "not lending n1: training job 12 is pending in train with no start forecast; a worker would only be preempted"
    )


def test_pending_training_forecast_elsewhere_does_not_hold_this_node():
    job = PendingTraining("12", "train", 4, T0 + timedelta(minutes=10), ("n2",))
    plan = make_plan(Snapshot(T0, nodes(2), pending_training=(job,)), policy())
    assert submits_on(plan, "n1")[0].time_limit_minutes == 240
    assert submits_on(plan, "n2")[0].time_limit_minutes == 9


def test_ineligible_pending_training_is_ignored():
    job = PendingTraining("12", "train", 4, None, (), eligible=False)
    plan = make_plan(Snapshot(T0, nodes(1), pending_training=(job,)), policy())
    assert len(plan.submits) == 1


def test_multi_partition_training_job_holds_each_of_its_partitions():
    job = PendingTraining("12", "debug,train", 4)
    plan = make_plan(Snapshot(T0, nodes(1), pending_training=(job,)), policy())
    assert plan.submits == ()


def test_active_reservation_blocks_the_node():
    res = ReservedWindow("maint", ("n1",), T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    plan = make_plan(Snapshot(T0, nodes(2), reservations=(res,)), policy())
    assert [s.node for s in plan.submits] == ["n2"]
    assert line_for(plan, "not lending n1:") == "not lending n1: in reservation maint until 16:00"


def test_limit_fitted_to_upcoming_reservation():
    res = ReservedWindow("maint", ("n2",), T0 + timedelta(minutes=60, seconds=45), T0 + timedelta(hours=5))
    plan = make_plan(Snapshot(T0, nodes(2), reservations=(res,)), policy())
    assert submits_on(plan, "n1")[0].time_limit_minutes == 240
    assert submits_on(plan, "n2")[0].time_limit_minutes == 60
    assert "limit by reservation maint starts at 15:00" in line_for(plan, "lend n2:")


def test_reservation_on_the_next_day_shows_its_date():
    res = ReservedWindow("maint", ("n1",), T0 + timedelta(hours=11), T0 + timedelta(hours=12))
    plan = make_plan(Snapshot(T0, nodes(1), reservations=(res,)), policy(max_job_minutes=24 * 60))
    assert "reservation maint starts at 2024-05-02 01:00" in line_for(plan, "lend n1:")


def test_time_min_never_exceeds_the_limit():
    job = PendingTraining("1", "train", 4, T0 + timedelta(minutes=7), ("n1",))
    plan = make_plan(Snapshot(T0, nodes(1), pending_training=(job,)), policy(time_min_minutes=10, min_window_minutes=3))
    (s,) = plan.submits
    assert (s.time_limit_minutes, s.time_min_minutes) == (6, 6)


def test_minimum_hole_is_a_parameter():
    job = PendingTraining("1", "train", 4, T0 + timedelta(minutes=20), ("n1",))
    snap = Snapshot(T0, nodes(1), pending_training=(job,))
    assert make_plan(snap, policy(min_window_minutes=30)).submits == ()
    assert len(make_plan(snap, policy(min_window_minutes=15)).submits) == 1


def test_longest_holes_are_lent_first_when_the_share_is_short():
    job = PendingTraining("1", "train", 4, T0 + timedelta(minutes=20), ("n1",))
    plan = make_plan(Snapshot(T0, nodes(2), pending_training=(job,)), policy(max_lend_share=0.5))
    assert [s.node for s in plan.submits] == ["n2"]
    assert "share cap reached (4 of 4 GPUs lent or planned" in line_for(plan, "not lending n1:")


def test_node_with_a_pending_worker_gets_no_second_one():
    snap = Snapshot(T0, nodes(1), workers=(worker("50", "n1", state=WorkerState.PENDING, age=2),))
    plan = make_plan(snap, policy())
    assert plan.submits == () and plan.cancels == ()
    assert "no free GPUs (training 0, workers 0, pending workers 4 of 4)" in line_for(plan, "not lending n1:")


def test_slurm_count_of_worker_gpus_wins_over_a_stale_worker_list():
    # sinfo already shows a worker the controller's squeue view missed.
    plan = make_plan(Snapshot(T0, (node("n1", workers=4), node("n2"))), policy())
    assert [s.node for s in plan.submits] == ["n2"]
    assert "no free GPUs (training 0, workers 4 of 4)" in line_for(plan, "not lending n1:")
    assert "lent 4 (pending 0, running 0, draining 0, unlisted 4)" in plan.explanations[0]


def test_every_node_gets_exactly_one_line():
    res = ReservedWindow("r", ("n4",), T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    snap = Snapshot(
        T0,
        (node("n1"), node("n2", idle=5), node("n3", training=4), node("n4"), node("n10", lendable=False)),
        reservations=(res,),
    )
    plan = make_plan(snap, policy())
    for name in ("n1", "n2", "n3", "n4", "n10"):
        assert len([x for x in plan.explanations if x.split(":")[0].endswith(f" {name}")]) == 1
    # natural order: n10 after n4
    order = [x.split(":")[0].split()[-1] for x in plan.explanations[1:]]
    assert order == ["n1", "n2", "n3", "n4", "n10"]
