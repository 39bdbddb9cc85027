"""The break-even rule (planner/payback.py): a hole is not lent to a model whose measured
start it cannot pay back, and the explanation gives the numbers."""

from datetime import timedelta

from isense_slurm.planner import ModelSpec, ModelStart, PendingTraining, Snapshot, make_plan
from isense_slurm.planner.payback import pays_back
from planner_world import T0, TINY, line_for, nodes, policy

BIG = ModelSpec("big-70b", 4)


def hole_of(minutes: int, **snap) -> Snapshot:
    """n1 free now, a training job forecast there `minutes` (+30 s margin) from now."""
    job = PendingTraining("9", "train", 4, T0 + timedelta(minutes=minutes, seconds=30), ("n1",))
    return Snapshot(T0, nodes(1), pending_training=(job,), **snap)


def test_a_lend_must_serve_at_least_as_long_as_the_start_by_default():
    assert pays_back(10, ModelStart("m", 300.0, 5), 1.0)  # 600 s >= 2 x 300
    assert not pays_back(9, ModelStart("m", 300.0, 5), 1.0)  # 540 s < 600
    assert pays_back(1, None, 1.0)  # not measured: lent, its workers measure it
    assert not pays_back(10, ModelStart("m", 300.0, 5), 1.5)  # 600 < 2.5 x 300


def test_a_hole_too_short_for_the_measured_start_is_not_lent_and_says_why():
    start = ModelStart("tiny-llama", 240.0, 7)
    plan = make_plan(hole_of(7, starts=(start,)), policy(min_window_minutes=5))
    assert plan.submits == ()
    assert line_for(plan, "not lending n1:") == (
        "not lending n1: tiny-llama starts in 240 s (median of 7 starts):"
        " a 7 min lend would serve 180 s < 1 x its start (break-even)"
    )


def test_a_hole_long_enough_is_lent_with_the_numbers():
    start = ModelStart("tiny-llama", 240.0, 7)
    plan = make_plan(hole_of(8, starts=(start,)), policy(min_window_minutes=5))
    (submit,) = plan.submits
    assert submit.time_limit_minutes == 8
    note = "tiny-llama starts in 240 s (median of 7 starts), so up to 240 s of the 8 min serve"
    assert note in line_for(plan, "lend n1:")
    assert note in submit.reason


def test_an_unmeasured_model_is_lent_and_the_line_says_so():
    plan = make_plan(hole_of(8), policy(min_window_minutes=5))
    assert len(plan.submits) == 1
    assert "tiny-llama's start not measured yet" in line_for(plan, "lend n1:")


def test_a_slow_model_gives_way_to_one_that_pays_back():
    starts = (ModelStart("big-70b", 900.0, 3), ModelStart("tiny-llama", 30.0, 12))
    plan = make_plan(hole_of(20, starts=starts), policy(models=(BIG, TINY), min_window_minutes=5))
    assert [s.model for s in plan.submits] == ["tiny-llama"]
    # With a long hole the big model pays back too (and is chosen first: larger model).
    plan = make_plan(hole_of(60, starts=starts), policy(models=(BIG, TINY), min_window_minutes=5))
    assert [s.model for s in plan.submits] == ["big-70b"]


def test_the_ratio_is_a_planner_knob():
    start = ModelStart("tiny-llama", 240.0, 7)
    assert make_plan(hole_of(8, starts=(start,)), policy(min_window_minutes=5, min_serving_ratio=0.5)).submits
    assert not make_plan(hole_of(8, starts=(start,)), policy(min_window_minutes=5, min_serving_ratio=1.5)).submits
