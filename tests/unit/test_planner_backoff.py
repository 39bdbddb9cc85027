"""Planner: no crash loops. Workers that end before serving hold their (node, model) back."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from isense_slurm.planner import Failures, ModelSpec, Snapshot, WorkerEnd, WorkerState, make_plan, note_end, note_served
from isense_slurm.planner.backoff import backoff_seconds, failure_line, holds, is_failure
from planner_world import T0, TINY, line_for, node, nodes, policy, submits_on, worker

SMALL = ModelSpec("small", 1)


def end(
    job_id="100",
    node_name="n1",
    model="tiny-llama",
    *,
    at=T0,
    served=False,
    state="FAILED",
    stopped=False,
    exit_code=1,
    last_line="vLLM exited with code 1 before becoming healthy",
):
    return WorkerEnd(job_id, node_name, model, at, served, state, stopped, exit_code, last_line)


def failed(count, node_name="n1", model="tiny-llama", *, last_at=T0, job_id="100") -> Failures:
    return Failures(node_name, model, count, last_at, job_id, "FAILED, exit 1: boom")


# --- counting -------------------------------------------------------------------------


def test_failures_in_a_row_count_and_a_served_worker_clears_them():
    f = {}
    for i in range(3):
        f = note_end(f, end(str(100 + i)))
    assert f[("n1", "tiny-llama")].count == 3
    assert f[("n1", "tiny-llama")].last_job_id == "102"
    assert f[("n1", "tiny-llama")].last_reason == "FAILED, exit 1: vLLM exited with code 1 before becoming healthy"
    f = note_end(f, end("103", node_name="n2"))  # another node counts on its own
    assert f[("n2", "tiny-llama")].count == 1
    f = note_end(f, end("104", served=True, state="PREEMPTED"))
    assert ("n1", "tiny-llama") not in f and ("n2", "tiny-llama") in f
    assert note_served(f, "n2", "tiny-llama") == {}


def test_ends_that_something_else_caused_neither_count_nor_clear():
    f = note_end({}, end("1"))
    for other in (
        end("2", state="PREEMPTED"),
        end("3", state="TIMEOUT"),
        end("4", state="CANCELLED"),
        end("5", state="COMPLETED", stopped=True),
        end("6", state="DEADLINE"),
    ):
        assert not is_failure(other)
        f = note_end(f, other)
    assert f[("n1", "tiny-llama")].count == 1


def test_a_worker_that_exits_without_serving_fails_whatever_its_exit_code():
    assert is_failure(end(state="COMPLETED", exit_code=0))
    assert is_failure(end(state="NODE_FAIL", exit_code=None))
    assert is_failure(end(state="", exit_code=None, last_line=""))
    assert failure_line(end(state="", exit_code=None, last_line="")) == "ended (Slurm no longer lists it), no output"
    long = failure_line(end(last_line="x" * 500 + "\n"))
    assert long.startswith("FAILED, exit 1: xxx") and long.endswith("...") and len(long) < 240


def test_backoff_doubles_from_the_threshold_and_is_capped():
    pol = policy(backoff_after_failures=3, backoff_seconds=60, backoff_max_seconds=1800)
    assert [backoff_seconds(n, pol) for n in (1, 2, 3, 4, 5, 8, 9, 10_000)] == [0, 0, 60, 120, 240, 1800, 1800, 1800]


# --- planning -------------------------------------------------------------------------


def test_below_the_threshold_the_node_is_lent_as_usual():
    snap = Snapshot(T0, nodes(1), failures=(failed(2),))
    plan = make_plan(snap, policy())
    assert [s.node for s in plan.submits] == ["n1"]
    assert plan.holds == ()


def test_at_the_threshold_the_pair_is_held_back_and_says_why():
    snap = Snapshot(T0, nodes(2), failures=(failed(3, last_at=T0 - timedelta(seconds=10), job_id="123"),))
    plan = make_plan(snap, policy())
    assert [s.node for s in plan.submits] == ["n2"]
    assert line_for(plan, "not lending n1:") == (
        "not lending n1: 4 GPUs free, but tiny-llama held back after 3 failed workers, until 14:00:50"
    )
    assert line_for(plan, "hold tiny-llama on n1:") == (
        "hold tiny-llama on n1: 3 workers ended before serving in a row (last: job 123, FAILED, exit 1: boom);"
        " back-off 60 s, one worker may try at 14:00:50"
    )
    (h,) = plan.holds
    assert (h.node, h.model, h.failures, h.until, h.state(T0)) == (
        "n1",
        "tiny-llama",
        3,
        T0 + timedelta(seconds=50),
        "backing-off",
    )


def test_after_the_backoff_exactly_one_worker_tries_then_none_while_it_starts():
    one_gpu = policy(models=(SMALL,))
    snap = Snapshot(T0, nodes(1), failures=(failed(3, model="small", last_at=T0 - timedelta(seconds=61)),))
    plan = make_plan(snap, one_gpu)
    assert [(s.node, s.model, s.gpus) for s in plan.submits] == [("n1", "small", 1)]  # not 4
    assert "one worker tries after the back-off" in plan.submits[0].reason
    assert plan.holds[0].state(T0) == "may-try"
    trying = replace(
        snap, workers=(worker("200", "n1", model="small", gpus=1, state=WorkerState.PENDING),), nodes=(node("n1"),)
    )
    plan = make_plan(trying, one_gpu)
    assert plan.submits == ()
    assert (
        line_for(plan, "not lending n1:") == "not lending n1: 3 GPUs free, but small held back while worker 200 tries"
    )
    assert line_for(plan, "hold small on n1:").endswith("back-off over, worker 200 is trying")


def test_a_held_model_leaves_the_node_to_the_other_models():
    both = policy(models=(TINY, SMALL))
    snap = Snapshot(T0, nodes(1), failures=(failed(5, model="tiny-llama"),))
    plan = make_plan(snap, both)
    assert [s.model for s in submits_on(plan, "n1")] == ["small"] * 4
    assert "tiny-llama held back after 5 failed workers" in line_for(plan, "lend n1:")


def test_a_failing_node_gets_a_handful_of_workers_an_hour_not_thousands():
    """Every worker fails at once; the controller sees each end at the next tick."""
    pol = policy(
        models=(SMALL,), min_idle_seconds=2, backoff_after_failures=3, backoff_seconds=60, backoff_max_seconds=1800
    )
    now, tick = T0, timedelta(seconds=1)
    failures: dict = {}
    pending: list = []
    submitted = 0
    for _ in range(3600):
        for job_id in pending:  # they all failed since the last tick
            failures = note_end(failures, end(job_id, model="small", at=now))
        pending = []
        snap = Snapshot(now, (node("n1", idle=10, now=now),), failures=tuple(failures.values()))
        plan = make_plan(snap, pol)
        for _s in plan.submits:
            submitted += 1
            pending.append(f"j{submitted}")
        now += tick
    # 4 at once (4 failures: back-off 120 s), then one try after 120, 240, 480 and 960 s;
    # the next waits 1800 s (the cap), past the hour
    assert submitted == 8
    assert failures[("n1", "small")].count == 8


def test_holds_ignore_draining_workers_and_unknown_nodes():
    pol = policy()
    hs = holds([failed(3)], [worker("9", "n1", state=WorkerState.DRAINING), worker("8", None)], pol)
    assert [h.trying for h in hs] == [None]
