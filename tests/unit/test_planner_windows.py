"""Planner: availability windows (real config Window objects), including across midnight."""

from datetime import datetime

from isense_slurm.availability import parse_window
from isense_slurm.planner import Snapshot, WorkerState, make_plan
from planner_world import line_for, node, policy, worker

NIGHTS = (parse_window("weekdays 20:00-08:00"), parse_window("weekends 00:00-24:00"))
FRI_2300 = datetime(2024, 5, 3, 23, 0)
WED_0730 = datetime(2024, 5, 1, 7, 30)
WED_1400 = datetime(2024, 5, 1, 14, 0)
THU_0155 = datetime(2024, 5, 2, 1, 55)


def snap_at(now, *workers, count=2):
    return Snapshot(now, tuple(node(f"n{i}", now=now) for i in range(1, count + 1)), workers=tuple(workers))


def test_inside_a_window_that_crossed_midnight_lends_until_it_closes():
    windows = (parse_window("daily 22:00-02:00"),)
    plan = make_plan(snap_at(THU_0155.replace(hour=0, minute=30)), policy(availability=windows))
    assert [s.time_limit_minutes for s in plan.submits] == [89, 89]  # 02:00 minus the 30 s margin
    assert "limit by availability window ends at 02:00" in line_for(plan, "lend n1:")
    assert "in availability window until 02:00" in plan.explanations[0]


def test_window_about_to_close_is_too_short_to_lend():
    windows = (parse_window("daily 22:00-02:00"),)
    plan = make_plan(snap_at(THU_0155), policy(availability=windows))
    assert plan.submits == ()
    assert "availability window ends at 02:00 (hole 4 min < minimum 5 min)" in line_for(plan, "not lending n1:")


def test_weekday_morning_limit_ends_at_eight():
    plan = make_plan(snap_at(WED_0730), policy(availability=NIGHTS))
    assert [s.time_limit_minutes for s in plan.submits] == [29, 29]


def test_touching_windows_chain_over_the_weekend():
    # Friday night runs into the weekend window, which ends Monday 00:00 (Sunday night
    # is no weekday night: a window belongs to the day it opens on).
    plan = make_plan(snap_at(FRI_2300), policy(availability=NIGHTS, max_job_minutes=600))
    assert [s.time_limit_minutes for s in plan.submits] == [600, 600]
    assert "limit by max_job_minutes" in line_for(plan, "lend n1:")
    assert "in availability window until 2024-05-06 00:00" in plan.explanations[0]


def test_outside_windows_nothing_is_lent_and_workers_are_cancelled():
    workers = (
        worker("31", "n1", now=WED_1400),
        worker("32", "n2", state=WorkerState.PENDING, now=WED_1400),
        worker("33", "n3", state=WorkerState.DRAINING, now=WED_1400),
    )
    plan = make_plan(snap_at(WED_1400, *workers, count=4), policy(availability=NIGHTS))
    assert plan.submits == ()
    assert [(c.job_id, c.reason) for c in plan.cancels] == [
        ("31", "outside availability window"),
        ("32", "outside availability window"),
    ]
    assert line_for(plan, "cancel 31") == "cancel 31 (tiny-llama on n1, running): outside availability window"
    assert line_for(plan, "not lending n4:") == "not lending n4: 4 GPUs free, but outside availability windows"
    assert "outside availability windows" in plan.explanations[0]


def test_node_reasons_come_before_the_window_reason():
    snap = Snapshot(WED_1400, (node("n1", idle=3, now=WED_1400),))
    plan = make_plan(snap, policy(availability=NIGHTS))
    assert line_for(plan, "not lending n1:") == "not lending n1: idle 3 s < dwell 60 s"


def test_no_windows_means_always():
    plan = make_plan(snap_at(WED_1400), policy(availability=()))
    assert len(plan.submits) == 2
    assert plan.explanations[0].endswith("always available")


def test_duck_typed_window_with_the_same_methods_works():
    class Always:
        def contains(self, dt):
            return True

        def end_of(self, dt):
            return dt.replace(hour=0, minute=0) + (datetime(2024, 1, 2) - datetime(2024, 1, 1))

    plan = make_plan(snap_at(WED_1400), policy(availability=(Always(),)))
    assert [s.time_limit_minutes for s in plan.submits] == [240, 240]
