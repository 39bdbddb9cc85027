"""Worker selection, draining and heartbeat expiry of the gateway's registry."""

import pytest

from isense_slurm.gateway.registry import QUARANTINE_SECONDS, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def events():
    return []


@pytest.fixture
def registry(clock, events):
    return Registry(15.0, on_event=lambda state, w, reason: events.append((state, w.job_id, reason)), clock=clock)


def add(registry, job_id, model="m", url=None):
    return registry.register(
        job_id, node=f"n{job_id}", gpus="0", model=model, url=url or f"http://h:{job_id}/", auth_header="Bearer k"
    )


def test_register_strips_trailing_slash_and_records_serving(registry, events):
    worker = add(registry, "1")
    assert worker.url == "http://h:1"
    assert events == [("serving", "1", None)]
    assert registry.live_count("m") == 1


def test_pick_prefers_fewest_outstanding(registry):
    a, b, c = add(registry, "1"), add(registry, "2"), add(registry, "3")
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert registry.pick("m") is b
    assert registry.pick("m", exclude={"2"}) is c


def test_pick_spreads_ties_over_idle_workers(registry, clock):
    add(registry, "1"), add(registry, "2")
    picked = []
    for _ in range(4):
        clock.now += 0.001
        picked.append(registry.pick("m").job_id)
    assert picked == ["1", "2", "1", "2"]


def test_pick_unknown_model_or_all_excluded_is_none(registry):
    add(registry, "1")
    assert registry.pick("other") is None
    assert registry.pick("m", exclude=("1",)) is None


def test_failed_worker_is_skipped_for_a_while(registry, clock):
    a, b = add(registry, "1"), add(registry, "2")
    registry.acquire(a)
    registry.release(a, failed=True)
    assert a.failures == 1
    assert registry.pick("m") is b
    b.outstanding = 5
    assert registry.pick("m") is b  # a is quarantined even though b is busier
    clock.now += QUARANTINE_SECONDS + 0.1
    assert registry.pick("m") is a


def test_a_quarantined_worker_is_taken_when_no_other_is_left(registry, clock):
    a, _b = add(registry, "1"), add(registry, "2")
    registry.acquire(a)
    registry.release(a, failed=True)
    # b went away mid-stream: the continuation must not find nowhere to go while a,
    # which failed once, may well serve.
    assert registry.pick("m", exclude={"2"}) is a


def test_an_answer_keeps_a_worker_alive_when_heartbeats_are_late(registry, clock):
    a = add(registry, "1")
    for _ in range(3):  # 3 x 10 s without a heartbeat, answering all along (timeout 15 s)
        clock.now += 10
        registry.acquire(a)
        registry.release(a)
        assert registry.expire() == []
    clock.now += 15.1  # nothing at all for longer than the timeout: gone
    assert registry.expire() == [a]


def test_a_failed_answer_is_no_proof_of_life(registry, clock):
    a = add(registry, "1")
    clock.now += 10
    registry.acquire(a)
    registry.release(a, failed=True)
    clock.now += 5.1
    assert registry.expire() == [a]


def test_deregister_stops_routing_and_ends_when_idle(registry, events):
    a, b = add(registry, "1"), add(registry, "2")
    registry.acquire(a)
    assert registry.deregister("1", "sigterm")
    assert registry.pick("m") is b
    assert registry.pick("m", exclude={"2"}) is None
    assert ("draining", "1", "sigterm") in events
    assert not any(e[0] == "ended" for e in events)  # a request is still in flight on it
    registry.release(a)
    assert events[-1] == ("ended", "1", "sigterm")
    assert "1" not in registry.workers
    assert not registry.deregister("1", "sigterm")


def test_heartbeat_keeps_a_worker_and_silence_expires_it(registry, clock, events):
    add(registry, "1"), add(registry, "2")
    clock.now += 10
    assert registry.heartbeat("1")
    clock.now += 10  # worker 2 silent for 20 s > 15 s
    gone = registry.expire()
    assert [w.job_id for w in gone] == ["2"]
    assert events[-1] == ("ended", "2", "heartbeat timeout")
    assert not registry.heartbeat("2")  # the worker will register again
    assert registry.live_count("m") == 1


def test_register_again_updates_in_place(registry, events):
    a = add(registry, "1")
    registry.acquire(a)
    again = registry.register("1", node="n1", gpus="0", model="m", url="http://h:9", auth_header="Bearer z")
    assert again is a
    assert (a.url, a.outstanding) == ("http://h:9", 1)
    assert events == [("serving", "1", None)]  # no second 'serving' for the same run
    assert registry.live_count("m") == 1


def test_register_after_deregister_routes_again(registry, events):
    add(registry, "1")
    w = registry.workers["1"]
    registry.acquire(w)
    registry.deregister("1", None)
    add(registry, "1")
    assert registry.pick("m") is w
    assert [e[0] for e in events] == ["serving", "draining", "serving"]


def test_model_change_moves_the_worker(registry):
    add(registry, "1", model="a")
    add(registry, "1", model="b")
    assert registry.pick("a") is None
    assert registry.pick("b").job_id == "1"


def test_snapshot_lists_workers_and_counters(registry):
    add(registry, "1")
    registry.model_stats("m").rejected += 2
    snap = registry.snapshot()
    assert snap["workers"][0]["job_id"] == "1"
    assert snap["workers"][0]["state"] == "serving"
    assert snap["models"]["m"]["rejected"] == 2
